"""How many Gunicorn workers a release runs on a real server, and the standby turned off. The server's own cores
and memory (read there: /proc/meminfo, nproc) give the count the rule (tasks/sizing.py) must have chosen, and
the live instance's processes are counted; `app.workers` wins over the rule. With `app.standby_minutes: 0` a
deploy leaves no previous instance running and says so, as does `fab status`. Runs on the shared Debian 13
server, which it gives back provisioned with the default inventory."""

from __future__ import annotations

import time

import pytest

from tasks import sizing
from tests.integration.appsite import Site, deployed_id, make_site
from tests.integration.conftest import APP, DOMAINS
from tests.integration.inventory import write_inventory
from tests.integration.test_standby import running, settled


def with_keys(site: Site, **app_keys) -> None:
    write_inventory(site.server.host, site.inventory, app=APP, domains=DOMAINS, source=site.repo.path,
                    health_check="/healthz/", **app_keys)


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory):
    site = make_site(trixie, tmp_path_factory, "sizing")
    try:
        yield site
    finally:
        with_keys(site)
        trixie.provision()  # the shared server back to the default inventory for the modules after this


def workers_of(site: Site, release: str, wanted: int, seconds: float = 30) -> int:
    """The Gunicorn workers (the master's children) of a release's instance, once there are `wanted` of them
    or `seconds` have passed: the master forks them after it starts listening."""
    unit = f"{APP}@{release}.service"
    deadline = time.monotonic() + seconds
    while True:
        master = site.root(f"systemctl show -P MainPID {unit}").strip()
        count = len(site.root(f"pgrep -P {master}", check=False).split()) if master != "0" else 0
        if count == wanted or time.monotonic() > deadline:
            return count
        time.sleep(0.5)


def test_the_live_instance_runs_as_many_workers_as_the_server_s_cores_and_memory_allow(site):
    release = deployed_id(site.deploy())
    memory_mib = int(site.root("awk '/^MemTotal:/ {print $2}' /proc/meminfo")) // 1024
    cores = int(site.root(f"runuser -u {APP} -- nproc"))
    wanted = sizing.web_workers(cores, memory_mib, True, 0)
    assert workers_of(site, release, wanted) == wanted, (cores, memory_mib)
    # The instance says why in its journal, for `fab logs`.
    said = site.fab("logs", "--grep", "workers:").stdout
    assert f"{wanted} workers: {cores} cores allow {sizing.cores_allow(cores)}, {memory_mib} MiB of memory " \
           f"allows {sizing.memory_allows(memory_mib, True, 0)}" in said, said


def test_with_the_standby_off_and_app_workers_a_deploy_leaves_only_the_live_instance_running(site):
    with_keys(site, standby_minutes=0, workers=2)
    refused = site.deploy(check=False)
    assert refused.returncode != 0 and "`app.workers` and `app.standby_minutes`" in refused.stdout + refused.stderr
    assert "gunicorn.conf.py updated" in site.fab("provision").stdout
    again = site.fab("provision").stdout  # with nothing to change, the step says what the file holds
    assert "with sync workers (2 of them: app.workers)" in again, again
    site.repo.set_version("sizing-1")
    first = deployed_id(site.deploy())
    assert workers_of(site, first, 2) == 2
    site.repo.set_version("sizing-2")
    out = site.deploy().stdout
    second = deployed_id(out)
    assert (f"no standby is kept (app.standby_minutes: 0): systemd is stopping {APP}@{first}.service; "
            f"`fab rollback` starts {first} cold first") in out, out
    assert settled(site, {second}) == {second}, running(site)
    status = site.fab("status", check=False).stdout
    line = next(line for line in status.splitlines() if " gunicorn:" in line)
    assert (f"no standby is kept (app.standby_minutes: 0): the rollback target {first} is not running, and "
            "`fab rollback` starts it cold first") in line, line
    # The rollback starts it cold, and again keeps nothing warm behind it.
    out = site.rollback().stdout
    assert f"rolled back to {first}" in out and "nothing to start" not in out, out
    assert site.answering() == f"sizing-1 {first}"
    assert settled(site, {first}) == {first}
