"""Deploys and rollbacks under keep-alive load: a client that keeps its connections open (as browsers and
load balancers do) must see no failed request while traffic moves from release to release.

tests/load.py opens a connection per request; here wrk (tests/wrk.py) keeps 16 connections alive from the
host, over HTTPS with the real domain, for the whole series of switches. Runs after test_releases on the
shared Debian 13 server (see conftest.py).
"""

from __future__ import annotations

import time

import pytest

from tests.integration.appsite import Site, deployed_id, make_site
from tests.integration.conftest import DOMAINS
from tests.wrk import Wrk

SWITCHES = 3  # deploys, each followed by a rollback
LOAD_SECONDS = 90  # the bound; the load ends as soon as the switches are done


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory) -> Site:
    return make_site(trixie, tmp_path_factory, "keepalive")


def test_deploys_and_rollbacks_under_keepalive_load_drop_no_request(site):
    # A live release to start from, with a warm standby behind it like after any deploy.
    site.repo.set_version("keepalive-base")
    base = deployed_id(site.deploy())
    assert site.answering() == f"keepalive-base {base}"

    deployed = []
    timings = []
    with Wrk(site.server.host.address, DOMAINS[0], "/version/", seconds=LOAD_SECONDS, connections=16,
             threads=2) as load:
        for i in range(SWITCHES):
            site.repo.set_version(f"keepalive-{i}")
            t0 = time.monotonic()
            deployed.append((f"keepalive-{i}", deployed_id(site.deploy())))
            t1 = time.monotonic()
            out = site.rollback().stdout
            timings.append((round(t1 - t0, 2), round(time.monotonic() - t1, 2)))
            assert f"rolled back to {base}" in out, out
            assert time.monotonic() - load.started < LOAD_SECONDS - 2, "the switches outlasted the load"
        time.sleep(1)
    result = load.result

    print(f"\nwrk -t2 -c16 over {result.seconds:.1f} s, {SWITCHES} deploys and {SWITCHES} rollbacks "
          f"(deploy s, rollback s: {timings}): {result.summary()}")
    for (status, body), count in sorted(result.answers.items(), key=lambda kv: -kv[1]):
        print(f"  {count:>7} x {status} {body[:80]}")

    assert result.requests > 100, result.output
    # The load really spanned the switches: every release that went live answered some of it.
    bodies = {body for (status, body) in result.answers if status == 200}
    assert f"keepalive-base {base}" in bodies
    for version, release in deployed:
        assert f"{version} {release}" in bodies, (version, release, bodies)
    assert {status for (status, _) in result.answers} == {200}, result.answers
    assert result.errors == {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non-2xx/3xx": 0}, \
        result.summary()
    assert site.answering() == f"keepalive-base {base}"
