"""A rolling deploy and a rollback across two real web servers sharing one database (README, "Several
servers").

Three members of one cluster: `web1` (web) and `web2` (web and worker) run the app, `db` holds a PostgreSQL the
test stands up itself as a managed one would be (database.url, as in test_database_url). No load balancer here
(test_layout has one): the site is plain HTTP by address, and the load goes to both web servers at once.
Proven: the two are provisioned together, each one's output under its header, and a second provision changes
nothing on either; a deploy under load builds everywhere, migrates once, switches one host after the other
with no failed request, and the worker follows; a release whose health check fails on the second host leaves
no host on it and names the host; a rollback over a migration is refused on both, then reverses it once.
"""

from __future__ import annotations

import re
import shlex
import time

import pytest

from tests import testhost
from tests.apprepo import AppRepo
from tests.integration.appsite import GOOD_MIGRATION
from tests.integration.conftest import APP, fab
from tests.integration.inventory import write_inventory
from tests.integration.test_database_url import (PASSWORD, SETTINGS_FROM_URL, VARIABLE, db_sql, provision,
                                                 stand_up_database)
from tests.load import Load
from tests.outside import http_get

# The app's health check fails on a server that has this file: a release that cannot serve there.
SICK = "/etc/gangway-test-sick"
SICK_HEALTH = f'''

def healthz(request):
    """Ill on purpose where {SICK} exists: one server of several failing its health check."""
    import os
    if os.path.exists("{SICK}"):
        return JsonResponse({{"status": "sick on purpose"}}, status=503)
    return _healthz(request)
'''


@pytest.fixture(scope="module")
def cluster():
    with testhost.start_cluster(["web1", "web2", "db"]) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def layout(cluster, tmp_path_factory):
    web1, web2, db = cluster["web1"], cluster["web2"], cluster["db"]
    tmp = tmp_path_factory.mktemp("rolling")
    stand_up_database(db, [web1, web2], tmp / "db-ca.pem")
    repo = AppRepo(tmp / "project")
    repo.write("mysite/settings.py", (repo.path / "mysite" / "settings.py").read_text() + SETTINGS_FROM_URL)
    repo.write_worker("1")
    repo.commit("read the database from DATABASE_URL; a worker")
    inventory = write_inventory(web1, tmp / "site.yaml", app=APP, source=repo.path, health_check="/healthz/",
                                processes={"worker": "manage.py gw_worker"},
                                layout=[(web1, ("web",)), (web2, ("web", "worker"))],
                                database={"url": f"postgres://{APP}@{db.address}:5432/{APP}?sslmode=verify-full",
                                          "ca_bundle": "db-ca.pem", "password_env": VARIABLE})
    first = provision(inventory, PASSWORD)
    return {"web1": web1, "web2": web2, "db": db, "repo": repo, "inventory": inventory, "first": first}


def root(host: testhost.TestHost, command: str):
    """A root command on a provisioned server, through the deploy user's sudo (root cannot log in any more)."""
    return host.ssh(f"sudo -n sh -c {shlex.quote(command)}", user="deploy")


def run(layout, task: str, *args: str, check: bool = True):
    return fab(task, "--inventory", str(layout["inventory"]), *args, check=check)


def answer(host: testhost.TestHost) -> str:
    """What the web server answers to /version/ by its address ("VERSION RELEASE"); fails unless a 200."""
    response = http_get(host.address, host.address, "/version/")
    assert response.status == 200, response
    return response.body.strip()


def live_worker(host: testhost.TestHost) -> str:
    """The release whose worker runs on `host` (read from systemd)."""
    out = root(host, f"systemctl list-units --plain --no-legend --state=active '{APP}-worker@*.service'").stdout
    return ",".join(sorted(re.findall(rf"{APP}-worker@(\S+)\.service", out)))


def test_the_servers_are_provisioned_together_and_a_second_time_change_nothing(layout):
    web1, web2 = layout["web1"], layout["web2"]
    said = layout["first"].stdout
    # Each server's output together, under its header; one recap names both.
    for host, roles in ((web1, "web"), (web2, "web, worker")):
        assert f"== {host.address} ({roles}) ==" in said, said
    assert "provision: 2 of 2 hosts ok" in said, said
    again = provision(layout["inventory"], PASSWORD)
    for host in (web1, web2):
        assert re.search(rf"^  {re.escape(host.address)}: \d+ steps, 0 changed", again.stdout, re.M), again.stdout
    # The worker's unit is on the worker host only; Gunicorn's on both.
    assert root(web2, f"test -f /etc/systemd/system/{APP}-worker@.service").returncode == 0
    assert root(web1, f"test -e /etc/systemd/system/{APP}-worker@.service").returncode != 0


def test_a_rolling_deploy_under_load_drops_no_request_and_moves_every_host_and_the_worker(layout):
    web1, web2, repo = layout["web1"], layout["web2"], layout["repo"]
    run(layout, "deploy")  # a live release to switch from
    repo.set_version("rolling-2")
    with Load(web1.address, web1.address, None, workers=2, max_seconds=240) as on_web1, \
            Load(web2.address, web2.address, None, workers=2, max_seconds=240) as on_web2:
        out = run(layout, "deploy").stdout
        returned = time.monotonic()
        time.sleep(1)
    release = re.search(r"deployed (\S+) to 2 hosts", out)
    assert release, out
    release = release.group(1)
    for load in (on_web1, on_web2):
        assert len(load.samples) > 20 and load.failures() == [], load.failures()[:5]
        assert load.answered_after(returned) == {f"rolling-2 {release}"}
    assert answer(web1) == answer(web2) == f"rolling-2 {release}"
    assert f"every app host serves {release}" in out
    # Switched one after the other, the worker host last.
    switched = [line for line in out.splitlines() if re.match(r"\s+changed\s+switch: ", line)]
    assert len(switched) == 2, out
    assert out.index(f"== {web1.address}") < out.index(f"== {web2.address}"), out
    assert live_worker(web2) == release and live_worker(web1) == ""


def test_a_release_that_fails_its_health_check_on_the_second_host_goes_live_nowhere(layout):
    web1, web2, repo = layout["web1"], layout["web2"], layout["repo"]
    good = repo.git("rev-parse", "HEAD").strip()
    before = run(layout, "deploy").stdout
    live = re.search(r"deployed (\S+) to 2 hosts", before).group(1)
    views = (repo.path / "counter/views.py").read_text()
    repo.write("counter/views.py", views.replace("def healthz(request):", "def _healthz(request):") + SICK_HEALTH)
    repo.set_version("sick")  # commits the ill health check with it
    root(web2, f"touch {SICK}")
    try:
        failed = run(layout, "deploy", check=False)
    finally:
        root(web2, f"rm -f {SICK}")
        repo.reset(good)
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0, said
    assert f"{web2.address} failed its switch, so no further host switched" in said, said
    assert f"{web1.address} switched back to {live}" in said, said
    assert f"Read back now: every app host serves {live}" in said, said
    assert answer(web1).split()[1] == answer(web2).split()[1] == live
    sick = re.search(r"release (\S+) did not go live", said).group(1)
    for host in (web1, web2):
        assert root(host, f"test -d /srv/{APP}/failed/{sick}").returncode == 0  # set aside on both
    assert live_worker(web2) == live


def test_a_rollback_over_a_migration_is_refused_then_reverses_it_once(layout):
    web1, web2, repo, db = layout["web1"], layout["web2"], layout["repo"], layout["db"]
    previous = re.search(r"deployed (\S+) to 2 hosts", run(layout, "deploy").stdout).group(1)
    repo.commit("counter.0002_hit_agent", **{"counter__migrations__0002_hit_agent.py": GOOD_MIGRATION})
    out = run(layout, "deploy").stdout
    assert re.search(rf"1 applied once, from {re.escape(web1.address)} \(counter.0002_hit_agent\)", out), out
    assert db_sql(db, "select count(*) from django_migrations where name = '0002_hit_agent'") == "1"
    refused = run(layout, "rollback", check=False)
    assert refused.returncode != 0 and "--migrate-back" in refused.stderr, refused.stderr
    assert answer(web1).split()[1] == answer(web2).split()[1] != previous  # nothing switched
    back = run(layout, "rollback", "--migrate-back").stdout
    assert "1 reversed (counter.0002_hit_agent), read back from the database" in back, back
    assert f"rolled back to {previous}: every app host serves {previous}" in back, back
    assert answer(web1).split()[1] == answer(web2).split()[1] == previous
    assert db_sql(db, "select count(*) from django_migrations where name = '0002_hit_agent'") == "0"
    repo.git("reset", "-q", "--hard", "HEAD~1")
