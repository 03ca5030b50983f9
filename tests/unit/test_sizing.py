"""How many Gunicorn workers a web instance runs (tasks/sizing.py), the config file that runs the rule on the
server, the app.workers override and how it is validated, and what provision says and a deploy compares."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks import defaults, sizing
from tasks.inventory import InventoryError, parse
from tasks.provisioning import Server, gunicorn, served

ONE_GB = 960  # MemTotal of a server sold as 1 GB, MiB (bench/workers.py uses the same)


def load(**app):
    return parse({"app": {"name": "mysite", "domains": ["app.test"], **app},
                  "hosts": [{"address": "10.0.0.2"}]}, "inventory/x.yaml", Path("."))


def server(**app) -> Server:
    inv = load(**app)
    return Server(inv, inv.hosts[0], (), lambda: None)


def used_mib(workers: int, standby: bool, processes: int) -> float:
    """What the rule counts for the server: the rest of it, the process types, the web instances."""
    return (sizing.OTHERS_MIB + processes * sizing.PROCESS_MIB
            + (2 if standby else 1) * (sizing.MASTER_MIB + workers * sizing.WORKER_MIB))


# --- the rule ------------------------------------------------------------------------------------------------

def test_cores_decide_on_a_server_with_memory_to_spare():
    assert sizing.web_workers(1, 16_000, True, 1) == 3
    assert sizing.web_workers(2, 16_000, True, 1) == 5
    assert sizing.web_workers(8, 64_000, True, 2) == sizing.MAX_WORKERS == 9


def test_a_1_gb_server_keeps_40_percent_free_with_the_live_release_the_standby_and_a_worker():
    workers = sizing.web_workers(1, ONE_GB, True, 1)
    assert workers >= 1
    assert used_mib(workers, True, 1) <= ONE_GB * (1 - sizing.FREE_SHARE)
    # One more would not fit: the memory, not the cores, decides here.
    assert used_mib(workers + 1, True, 1) > ONE_GB * (1 - sizing.FREE_SHARE) and workers < sizing.cores_allow(1)


@pytest.mark.parametrize("memory", [1024, 2048, 4096, 8192])
@pytest.mark.parametrize("standby", [True, False])
@pytest.mark.parametrize("processes", [0, 1, 3])
def test_what_the_memory_allows_always_leaves_the_free_share(memory, standby, processes):
    allowed = sizing.memory_allows(memory, standby, processes)
    if allowed >= 1:
        assert used_mib(allowed, standby, processes) <= memory * (1 - sizing.FREE_SHARE)
    assert used_mib(allowed + 1, standby, processes) > memory * (1 - sizing.FREE_SHARE)


def test_the_standby_and_each_process_type_cost_workers():
    assert sizing.web_workers(4, 2048, False, 0) > sizing.web_workers(4, 2048, True, 0)
    assert sizing.web_workers(4, 2048, True, 0) > sizing.web_workers(4, 2048, True, 3)


def test_never_fewer_than_one_and_two_as_soon_as_memory_allows_them():
    assert sizing.web_workers(1, 256, True, 4) == 1
    smallest_for_two = next(m for m in range(256, 8192, 8) if sizing.web_workers(1, m, True, 1) >= 2)
    assert sizing.web_workers(1, smallest_for_two - 8, True, 1) == 1
    assert sizing.web_workers(2, smallest_for_two, True, 1) >= 2


# --- the config file that runs it on the server --------------------------------------------------------------

def run_config(source: str) -> dict:
    namespace: dict = {}
    os.environ["RUNTIME_DIRECTORY"] = "/run/mysite/r1"
    exec(compile(source, "gunicorn.conf.py", "exec"), namespace)
    return namespace


def test_the_config_carries_the_rule_and_sizes_from_this_machine_s_cores_and_memory():
    source = gunicorn.config_file(server(processes={"worker": "celery -A mysite worker"}))
    assert Path(sizing.__file__).read_text().strip() in source  # the one rule, not a copy of it
    found = run_config(source)
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 1048576
    assert found["workers"] == sizing.web_workers(len(os.sched_getaffinity(0)), memory, True, 1)
    assert (found["WORKERS"], found["STANDBY"], found["PROCESSES"]) == (None, True, 1)


def test_the_standby_off_is_counted_off_and_app_workers_wins():
    assert run_config(gunicorn.config_file(server(standby_minutes=0)))["STANDBY"] is False
    assert run_config(gunicorn.config_file(server(workers=3)))["workers"] == 3


def test_the_config_says_in_the_journal_how_many_workers_and_why():
    lines = []
    log = type("Log", (), {"info": lambda self, text, *args: lines.append(text % args)})()
    run_config(gunicorn.config_file(server()))["on_starting"](type("Arbiter", (), {"log": log})())
    assert "cores allow" in lines[0] and "MiB of memory allows" in lines[0] and "a standby counted" in lines[0]
    lines.clear()
    run_config(gunicorn.config_file(server(workers=4)))["on_starting"](type("Arbiter", (), {"log": log})())
    assert lines == ["4 workers: app.workers in the inventory"]


def test_the_config_defines_no_gunicorn_setting_by_accident():
    """Gunicorn takes every module-level name of its config that is one of its settings (all lower-case): the
    rule's own names are upper-case, or functions no setting is called."""
    names = {name for name in run_config(gunicorn.config_file(server())) if name.islower()} - {"__builtins__"}
    assert names == {"os", "cores_allow", "memory_allows", "web_workers",  # the rule
                     "bind", "umask", "workers", "on_starting", "timeout", "graceful_timeout", "max_requests",
                     "max_requests_jitter", "worker_tmp_dir", "forwarded_allow_ips", "accesslog", "errorlog",
                     "loglevel"}


# --- the override and what provision and deploy say ----------------------------------------------------------

@pytest.mark.parametrize("value, words", [
    (0, ["app.workers", "0 must be from 1 to 32", "remove app.workers"]),
    (defaults.MOST_WORKERS + 1, ["app.workers", "must be from 1 to 32"]),
    ("4", ["app.workers", "must be a number", "found str '4'"]),
    (True, ["app.workers", "must be a number"]),
])
def test_app_workers_is_checked_with_the_key_and_the_fix(value, words):
    with pytest.raises(InventoryError) as error:
        load(workers=value)
    for word in words:
        assert word in str(error.value)


def test_app_workers_is_read():
    assert load(workers=4).app.workers == 4 and load().app.workers is None


def test_provision_says_how_the_workers_are_counted():
    assert "(4 of them: app.workers)" in gunicorn.service(server(workers=4)).note
    note = gunicorn.service(server(standby_minutes=0, processes={"w": "rq worker"})).note
    assert "as many as the server's cores and memory allow at each start, counting no standby " \
           "(app.standby_minutes: 0) and 1 process type)" in note
    assert "at each start, counting the standby)" in gunicorn.service(server()).note


def test_a_deploy_names_what_changes_the_worker_count_until_provision_writes_it():
    before = served.as_provisioned(load())
    for keys, key in (({"workers": 2}, "app.workers"), ({"standby_minutes": 0}, "app.standby_minutes"),
                      ({"processes": {"w": "rq worker"}}, "app.processes")):
        differ = served.drift(load(**keys), before)
        assert [(d.name, d.keys) for d in differ] == [("Gunicorn config", (key,))]
    # How long the standby lasts is the deploy's business: the count only knows whether there is one.
    assert served.drift(load(standby_minutes=30), before) == []

