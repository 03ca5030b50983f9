"""Process types: the inventory's app.processes, their unit files, and the shell that moves them at a switch."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tasks import inventory
from tasks.commands import processes as commands, release
from tasks.facts.releases import Release
from tasks.inventory import InventoryError, Process
from tasks.layout import Layout
from tasks.provisioning import Server, processes
from tests.unit.shellcheck import assert_shellcheck_clean

R = "20261201T000000Z-abcdef1"
HOSTILE = "celery -A proj worker --x='$(touch /tmp/p)' \"a b\" 50% $HOME '`id`' ';rm -rf /'"


def parsed(procs) -> inventory.Inventory:
    return inventory.parse({"app": {"name": "mysite", "processes": procs}}, "production.yaml", Path("."))


def exec_words(unit: str) -> list[str]:
    """The argv systemd would run for an ExecStart= line (quotes and $$/%% undone, %i left)."""
    line = next(l for l in unit.splitlines() if l.startswith("ExecStart="))
    return [w.replace("$$", "$").replace("%%", "%") for w in shlex.split(line[len("ExecStart="):])]


def test_a_command_string_and_a_mapping_both_give_a_process_and_celery_beat_is_a_singleton_by_default():
    inv = parsed({"worker": "celery -A proj worker -l info", "beat": "celery -A proj beat",
                  "tasks": {"command": "manage.py db_worker", "stop_timeout": 300},
                  "lonely": {"command": "rq worker", "singleton": True}})
    by = {p.name: p for p in inv.app.processes}
    assert by["worker"] == Process("worker", ("celery", "-A", "proj", "worker", "-l", "info"), False, 60)
    assert by["beat"].singleton and not by["tasks"].singleton and by["lonely"].singleton
    assert by["tasks"].stop_timeout == 300
    assert not parsed({"b": {"command": "celery -A p beat", "singleton": False}}).app.processes[0].singleton


@pytest.mark.parametrize("procs, words", [
    ({"job": "x"}, "gangway's own units"), ({"backup": "x"}, "gangway's own units"),
    ({"Worker": "x"}, "lower-case"), ({"my-worker": "x"}, "lower-case"), ({"w": ""}, "is empty"),
    ({"w": "celery\nworker"}, "line break"), ({"w": "$(id) x"}, "not a program"), ({"w": "../bin/x"}, "not a program"),
    ({"w": "'unclosed"}, "close the quote"), ({"w": {"command": "x", "stop_timeout": 0}}, "stop_timeout"),
    ({"w": {"command": "x", "singleton": "yes"}}, "true or false"), ({"w": ["x"]}, "a command or a mapping"),
    ({"w": {"command": "x", "restart": True}}, "unknown key"),
])
def test_unusable_processes_are_refused_naming_the_key(procs, words):
    with pytest.raises(InventoryError) as refused:
        parsed(procs)
    assert "production.yaml: app.processes." in str(refused.value) and words in str(refused.value)


def test_a_hostile_command_reaches_the_program_word_for_word_and_no_shell_runs_it():
    inv = parsed({"worker": HOSTILE})
    unit = processes.unit_files(inv)["mysite-worker@.service"]
    assert exec_words(unit) == ["/srv/mysite/releases/%i/.venv/bin/celery", *shlex.split(HOSTILE)[1:]]
    assert "/bin/sh" not in unit and "$$(touch" in unit and "50%%" in unit


@pytest.mark.parametrize("command, first", [
    ("manage.py db_worker", ["/srv/mysite/releases/%i/.venv/bin/python", "manage.py", "db_worker"]),
    ("python manage.py rqworker", ["/srv/mysite/releases/%i/.venv/bin/python", "manage.py", "rqworker"]),
    ("bin/worker --fast", ["/srv/mysite/releases/%i/bin/worker", "--fast"]),
    ("/usr/bin/env true", ["/usr/bin/env", "true"]),
])
def test_the_first_word_is_resolved_in_the_release(command, first):
    assert exec_words(processes.unit_files(parsed({"w": command}))["mysite-w@.service"]) == first


def test_the_unit_runs_as_the_app_in_the_release_sandboxed_and_drains_on_stop():
    unit = processes.unit_files(parsed({"worker": {"command": "celery -A p worker", "stop_timeout": 90}}))[
        "mysite-worker@.service"]
    for line in ("User=mysite", "Group=mysite", "WorkingDirectory=/srv/mysite/releases/%i",
                 "EnvironmentFile=-/srv/mysite/shared/env", "EnvironmentFile=-/srv/mysite/shared/config.env",
                 "Restart=on-failure", "KillSignal=SIGTERM", "KillMode=mixed", "TimeoutStopSec=90s",
                 "ProtectSystem=strict", "NoNewPrivileges=yes", "MemoryMax=35%", "WantedBy=multi-user.target"):
        assert line in unit.splitlines()
    assert unit.startswith("# gangway process type: worker\n")


def test_drift_names_the_units_a_provision_would_write_or_remove_and_unknown_is_no_drift():
    inv = parsed({"worker": "celery -A p worker"})
    assert processes.drift(inv, processes.as_provisioned(inv)) == []
    assert processes.drift(inv, {}) == ["mysite-worker@.service"]
    assert processes.drift(inv, {**processes.as_provisioned(inv), "mysite-old@.service": "x"}) == ["mysite-old@.service"]
    assert processes.drift(inv, None) == []


PROCS = (Process("worker", ("celery", "worker")), Process("beat", ("celery", "beat"), singleton=True))


def test_the_builders_are_clean_shell():
    layout = Layout("mysite")
    assert_shellcheck_clean("\n".join([
        commands.start_and_check(layout, R, PROCS, 5), *commands.after_switch(layout, R, PROCS),
        commands.put_back(layout, R, PROCS, ["mysite-beat@20261101T000000Z-0000000.service"]),
        *commands.stop_release(layout, R), commands.units_probe(layout).command]))


def test_singletons_stop_elsewhere_before_the_new_one_starts_and_plain_processes_do_not():
    script = commands.start_and_check(Layout("mysite"), R, PROCS, 5)
    assert script.index("'mysite-beat@*.service'") < script.index(f"systemctl start mysite-worker@{R}.service")
    assert "'mysite-worker@*.service'" not in script
    assert f"exit {commands.PROCESS_FAILED}" in script and "journalctl -u" in script


def test_the_switch_moves_boot_links_and_stops_other_releases_processes_without_waiting():
    switch = release.switch(Layout("mysite"), Release(R, "abc"), "20261101T000000Z-0000000", {}, 10,
                            backend_ready=True, processes=PROCS)
    assert f"/etc/systemd/system/multi-user.target.wants/mysite-beat@{R}.service" in switch
    assert 'systemctl stop --no-block "$gw_u"' in switch
    assert release.switch(Layout("mysite"), Release(R, "abc"), None, {}, 10, backend_ready=True).count("gw_stopping") == 0


def test_a_set_aside_release_has_its_processes_stopped_and_off_boot():
    script = release.set_aside(Layout("mysite"), Release(R, "abc"), {})
    assert f"systemctl stop 'mysite-*@{R}.service'" in script


def test_unit_states_are_read_into_names_and_releases():
    units = commands.parse_units(f"mysite-worker@{R}.service loaded active running x\n"
                                 "mysite-backup.service loaded inactive dead y\n", 0)
    assert units == {f"mysite-worker@{R}.service": "active", "mysite-backup.service": "inactive"}
    assert commands.split_unit(Layout("mysite"), f"mysite-worker@{R}.service") == ("worker", R)
    assert commands.split_unit(Layout("mysite"), "mysite-backup.service") is None
    assert commands.parse_units("", 1) is None


def test_only_a_type_written_by_provision_is_said_to_wait_for_the_next_deploy():
    def step(procs):
        return processes.units(Server(parsed(procs), None, (), lambda: None))
    assert "from the next `fab deploy`" in step({"worker": "celery -A p worker"}).changed_note
    # Every type taken out: the step stops their instances itself, nothing waits for a deploy.
    assert step({}).changed_note == ""
