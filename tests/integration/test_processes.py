"""Process types (app.processes) on a real server: a database-backed worker made from a management command of
the test app, and a scheduler-like singleton. The live release's worker runs queued work; after a deploy the
worker runs the new code; systemd restarts a killed worker; the singleton never runs twice across a switch;
a worker that crashes at start fails the deploy before the switch with its journal, the old release still
serving; a rollback runs the old worker code."""

from __future__ import annotations

import time

import pytest

from tests.integration.appsite import deployed_id, make_site
from tests.integration.conftest import APP
from tests.integration.inventory import write_inventory
from tests.integration.conftest import DOMAINS

PROCESSES = {"worker": "manage.py gw_worker", "beat": {"command": "manage.py gw_worker --beat", "singleton": True,
                                                      "stop_timeout": 10}}


def with_processes(site, processes) -> None:
    write_inventory(site.server.host, site.inventory, app=APP, domains=DOMAINS, source=site.repo.path,
                    health_check="/healthz/", **({"processes": processes} if processes else {}))


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory):
    site = make_site(trixie, tmp_path_factory, "processes")
    site.repo.write_worker("v1")
    with_processes(site, PROCESSES)
    site.fab("provision")
    site.first = deployed_id(site.deploy())
    yield site
    # The shared server goes on without process types: the next module starts from what it expects.
    with_processes(site, None)
    site.fab("provision")


def done_by(site, timeout: float = 20) -> str:
    """Queue one task and wait for a worker to do it: what it wrote ("/done/VERSION/RELEASE")."""
    row = site.sql("insert into counter_hit (created, path) values (now(), '/todo/') returning id")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = site.sql(f"select path from counter_hit where id = {int(row.splitlines()[0])}")
        if path != "/todo/":
            return path
        time.sleep(0.3)
    raise AssertionError("no worker took the queued task")


def unit(name: str, release: str) -> str:
    return f"{APP}-{name}@{release}.service"


def test_the_live_releases_worker_runs_queued_work(site):
    assert done_by(site) == f"/done/v1/{site.first}"
    assert site.root(f"systemctl is-enabled {unit('worker', site.first)}").strip() == "enabled"
    out = site.fab("status", check=False).stdout
    assert f"{unit('worker', site.first)} running" in out, out


def test_systemd_restarts_a_killed_worker(site):
    worker = unit("worker", site.first)
    pid = site.root(f"systemctl show -P MainPID {worker}").strip()
    site.root(f"kill -9 {pid}")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = site.root(f"systemctl show -P MainPID {worker}").strip()
        if now not in ("0", pid) and site.root(f"systemctl is-active {worker}", check=False).strip() == "active":
            break
        time.sleep(0.5)
    assert site.root(f"systemctl show -P NRestarts {worker}").strip() != "0"
    assert done_by(site) == f"/done/v1/{site.first}"


def test_after_a_deploy_the_worker_runs_the_new_code_and_the_singleton_never_ran_twice(site):
    site.repo.write_worker("v2")
    out = site.deploy().stdout
    site.second = deployed_id(out)
    assert "stopping gracefully" in out, out
    assert done_by(site) == f"/done/v2/{site.second}"
    # Wait for the old worker's graceful stop, then read the singleton's starts and stops in the order written.
    events = site.sql("select path from counter_hit where path like '/beat-%' order by id").split()
    running = 0
    for event in events:
        running += 1 if event.startswith("/beat-start/") else -1
        assert running in (0, 1), events
    assert events[-1] == f"/beat-start/{site.second}", events
    assert site.root(f"systemctl is-active {unit('worker', site.first)}", check=False).strip() in (
        "inactive", "deactivating")


def test_a_worker_that_crashes_at_start_fails_the_deploy_before_the_switch(site):
    site.repo.write_worker("v3", crash=True)
    out = site.deploy(check=False)
    assert out.returncode != 0
    said = out.stdout + out.stderr
    assert "gw-worker-crash at start" in said and f"{site.second} is still serving" in said, said
    assert site.answering().endswith(site.second)
    assert done_by(site) == f"/done/v2/{site.second}"
    assert site.root(f"systemctl is-active {unit('beat', site.second)}").strip() == "active"


def test_a_rollback_runs_the_old_worker_code(site):
    out = site.rollback("--to", site.first).stdout
    assert done_by(site) == f"/done/v1/{site.first}", out
    assert site.root(f"systemctl is-enabled {unit('worker', site.first)}").strip() == "enabled"
    link = f"/etc/systemd/system/multi-user.target.wants/{unit('worker', site.second)}"
    assert site.server.root(f"test -e {link}").returncode != 0
