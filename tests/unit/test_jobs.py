"""Scheduled management commands without a server: the inventory's app.jobs (hostile values refused), the
service and timer files, the provision step's plan (install, restart, remove), shellcheck on what it runs."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tasks.inventory import InventoryError, check_schedule, parse
from tasks.provisioning import Server, jobs
from tasks.facts.steps import PathState
from tests.unit.shellcheck import assert_shellcheck_clean

HOSTILE = ["$(touch /tmp/x)", "`id`", "a'b", 'a"b', "a\\b", "100%", "$HOME", "${HOME}", "x;rm -rf /", "a b"]


def inventory(jobs_=None, **app):
    data = {"app": {"name": "mysite", **app, **({"jobs": jobs_} if jobs_ is not None else {})},
            "hosts": [{"address": "10.0.0.2"}]}
    return parse(data, "site.yaml", Path("."))


def server(jobs_=None):
    inv = inventory(jobs_)
    return Server(inv, inv.hosts[0], ("ssh-ed25519 AAAA me",), lambda: None)


def job(name="clearsessions", command="clearsessions", schedule="daily"):
    return {"name": name, "command": command, "schedule": schedule}


# --- the inventory ---------------------------------------------------------------------------------------------

def test_jobs_are_read_with_their_command_split_like_a_shell_would():
    inv = inventory([job(), job("remind", "send_reminders --days 3 'two words'", "*-*-* 03:00:00")])
    assert [(j.name, j.command, j.schedule) for j in inv.app.jobs] == [
        ("clearsessions", ("clearsessions",), "daily"),
        ("remind", ("send_reminders", "--days", "3", "two words"), "*-*-* 03:00:00")]
    assert inventory().app.jobs == ()


@pytest.mark.parametrize("name", ["", "Clear", "1st", "a.b", "a/b", "a b", "-x", "a" * 33, "é", "a\nb",
                                  *HOSTILE])
def test_a_job_name_that_is_not_a_plain_identifier_is_refused(name):
    with pytest.raises(InventoryError, match=r"app\.jobs\[0\]\.name: .*not a usable job name"):
        inventory([job(name=name)])


@pytest.mark.parametrize("schedule", ["", "nightly", "25:00", "*-*-* 03:60", "*-*-* 03:00:00\n", "daily\n",
                                      "daily; touch /tmp/x", "$(touch /tmp/x)", "*-*-* 03:00 UTC", "Monday 03:00",
                                      "03:00\nOnCalendar=minutely", "%n", *HOSTILE])
def test_a_schedule_outside_the_strict_forms_is_refused(schedule):
    with pytest.raises(InventoryError, match=r"app\.jobs\[0\]\.schedule: .*systemd-analyze calendar"):
        inventory([job(schedule=schedule)])


ACCEPTED = ["daily", "hourly", "weekly", "monthly", "minutely", "*-*-* 03:00:00", "*-*-* 3:00", "03:00",
            "Mon *-*-* 04:30", "Mon,Fri 03:00", "Mon..Fri *-*-* 3:00", "*-*-* *:0/15", "*-*-01 00:00:00",
            "2026-01-01 00:00:00", "*-*-* 0,12:00"]


@pytest.mark.parametrize("schedule", ACCEPTED)
def test_every_accepted_schedule_is_one_systemd_accepts(schedule):
    assert check_schedule(schedule) is None
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed here; the pattern is checked above")
    out = subprocess.run(["systemd-analyze", "calendar", schedule], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("command, problem", [
    ("", "is empty"), ("   ", "is empty"), ("'unclosed", "close the quote"), ("--settings x", "must start"),
    ("$(touch /tmp/x)", "must start"), ("clear sessions\n", "line break"), ("a\x00b", "control character"),
    ("manage.py clearsessions", "must start"), ("`id`", "must start")])
def test_a_command_that_is_not_a_management_command_is_refused(command, problem):
    with pytest.raises(InventoryError, match=rf"app\.jobs\[0\]\.command: .*{problem}"):
        inventory([job(command=command)])


def test_two_jobs_with_one_name_and_unknown_keys_are_refused():
    with pytest.raises(InventoryError, match=r"app\.jobs\[1\]\.name: 'a' is used twice"):
        inventory([job("a"), job("a")])
    with pytest.raises(InventoryError, match=r"app\.jobs\[0\]\.user: unknown key"):
        inventory([{**job(), "user": "root"}])
    with pytest.raises(InventoryError, match=r"app\.jobs\[0\]\.schedule: is missing"):
        inventory([{"name": "a", "command": "a"}])


# --- the unit files ------------------------------------------------------------------------------------------

def exec_start(unit: str) -> str:
    [line] = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    return line[len("ExecStart="):]


def test_the_service_runs_manage_py_in_the_live_release_as_the_app_with_its_environment_and_sandbox():
    srv = server([job()])
    unit = jobs.service_file(srv.inventory, srv.inventory.app.jobs[0])
    for line in ("Type=oneshot", "User=mysite", "Group=mysite", "EnvironmentFile=-/srv/mysite/shared/env",
                 "EnvironmentFile=-/srv/mysite/shared/config.env", "ConditionPathExists=/srv/mysite/current",
                 "ProtectSystem=strict", "ReadWritePaths=/srv/mysite/shared/media", "NoNewPrivileges=yes",
                 "SystemCallFilter=@system-service", "CapabilityBoundingSet=", "SyslogIdentifier=mysite-job-clearsessions"):
        assert line in unit.splitlines(), line
    assert exec_start(unit).startswith('/bin/sh -c "release=$$(readlink -f /srv/mysite/current) && ')
    assert exec_start(unit).endswith('" "mysite-job-clearsessions" "clearsessions"')
    timer = jobs.timer_file(srv.inventory, srv.inventory.app.jobs[0])
    assert "OnCalendar=daily" in timer.splitlines() and "Persistent=true" in timer.splitlines()


def systemd_unquote(words: str) -> list[str]:
    """How systemd splits an Exec line's double-quoted words and undoes $$, %% and backslash escapes: enough of
    its syntax to prove what the command receives."""
    out, i = [], 0
    while i < len(words):
        assert words[i] == '"', words[i:]
        i, word = i + 1, ""
        while words[i] != '"':
            if words[i] == "\\":
                word, i = word + words[i + 1], i + 2
            elif words[i] in "$%":
                assert words[i + 1] == words[i], f"unescaped {words[i]} in {words}"
                word, i = word + words[i], i + 2
            else:
                word, i = word + words[i], i + 1
        out.append(word)
        i += 2  # the quote and the space after it
    return out


def test_hostile_arguments_reach_manage_py_verbatim_through_systemds_quoting():
    srv = server([job(command="gw_mark " + " ".join(f"'{w}'" if "'" not in w else f'"{w}"' for w in HOSTILE))])
    unit = jobs.service_file(srv.inventory, srv.inventory.app.jobs[0])
    words = systemd_unquote(exec_start(unit)[len("/bin/sh -c "):])
    assert words[1:] == ["mysite-job-clearsessions", "gw_mark", *HOSTILE]
    assert words[0] == jobs.LAUNCHER.format(current="/srv/mysite/current")
    assert_shellcheck_clean(words[0])


# --- the provision step ------------------------------------------------------------------------------------------

def facts_for(srv, present: dict[str, str], units: dict[str, str]):
    """Facts as the server would report them: `present` maps a file path to its content."""
    step = jobs.scheduled(srv)
    facts = {}
    for probe in step.probes():
        if probe.key.startswith("path:"):
            content = present.get(probe.key[5:])
            facts[probe.key] = (None if content is None else
                                PathState("regular file", "644", "root", "root",
                                          hashlib.sha256(content.encode()).hexdigest()))
    facts["job_units"] = units
    return step, facts


def installed(srv) -> tuple[dict[str, str], dict[str, str]]:
    files = {f"/etc/systemd/system/{name}": content for name, content in jobs.unit_files(srv.inventory).items()}
    units = {name: "enabled active" if name.endswith(".timer") else "" for name in jobs.unit_files(srv.inventory)}
    return files, units


def test_a_new_job_gets_its_files_and_a_started_timer_and_then_nothing_changes():
    srv = server([job(command="clearsessions --verbosity 0")])
    step, facts = facts_for(srv, {}, {})
    plan = step.plan(facts)
    assert [c.what for c in plan.changes] == [
        "/etc/systemd/system/mysite-job-clearsessions.service created",
        "/etc/systemd/system/mysite-job-clearsessions.timer created",
        "mysite-job-clearsessions.timer started (daily)"]
    assert "systemctl enable mysite-job-clearsessions.timer" in plan.script
    assert_shellcheck_clean(plan.script)
    step, facts = facts_for(srv, *installed(srv))
    assert step.plan(facts).script is None
    assert step.plan(facts).note == "clearsessions (daily); in the live release as mysite"


def test_a_changed_schedule_or_a_stopped_timer_restarts_the_timer():
    srv = server([job()])
    files, units = installed(srv)
    step, facts = facts_for(srv, files, {**units, "mysite-job-clearsessions.timer": "disabled inactive"})
    assert [c.what for c in step.plan(facts).changes] == ["mysite-job-clearsessions.timer started (daily)"]
    moved = server([job(schedule="*-*-* 04:00:00")])
    step, facts = facts_for(moved, files, units)
    plan = step.plan(facts)
    assert [c.what for c in plan.changes] == ["/etc/systemd/system/mysite-job-clearsessions.timer updated",
                                              "mysite-job-clearsessions.timer started (*-*-* 04:00:00)"]
    assert plan.script.index("base64 -d") < plan.script.index("systemctl restart mysite-job-clearsessions.timer")


def test_a_job_taken_out_of_the_inventory_is_stopped_and_its_files_removed():
    old = server([job(), job("remind", "send_reminders", "hourly")])
    srv = server([job()])
    step, facts = facts_for(srv, *installed(old))
    plan = step.plan(facts)
    assert [c.what for c in plan.changes] == [
        "mysite-job-remind.service removed (no longer in the inventory)",
        "mysite-job-remind.timer removed (no longer in the inventory)", "systemd reloaded"]
    assert "systemctl disable --now mysite-job-remind.timer" in plan.script
    assert "rm -f /etc/systemd/system/mysite-job-remind.service" in plan.script
    assert_shellcheck_clean(plan.script)
    step, facts = facts_for(server(), *installed(old))
    assert len(step.plan(facts).changes) == 5
    step, facts = facts_for(server(), {}, {})
    assert step.plan(facts).script is None and step.plan(facts).note == "none in the inventory (app.jobs)"


def test_the_units_probe_lists_only_this_apps_job_units_and_passes_shellcheck():
    for probe in (jobs.units_probe(server().layout), jobs.files_probe(server().layout)):
        assert "/etc/systemd/system/mysite-job-" in probe.command
        assert_shellcheck_clean(probe.command)
    assert probe.parse("mysite-job-a.service \nmysite-job-a.timer enabled active\n", 0) == {
        "mysite-job-a.service": "", "mysite-job-a.timer": "enabled active"}


def test_deploy_sees_which_job_units_a_provision_would_change():
    inv = inventory([job(), job("remind", "send_reminders", "hourly")])
    on_server = {name: hashlib.sha256(content.encode()).hexdigest() for name, content in jobs.unit_files(inv).items()}
    assert jobs.drift(inv, on_server) == []
    assert jobs.drift(inventory([job()]), on_server) == ["mysite-job-remind.service", "mysite-job-remind.timer"]
    assert jobs.drift(inventory([job(schedule="weekly"), job("remind", "send_reminders", "hourly")]),
                      on_server) == ["mysite-job-clearsessions.timer"]
    assert jobs.drift(inventory(), {}) == []
