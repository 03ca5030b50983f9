"""Which releases run after deploys and rollbacks, on a real server: only the live one and the one the next
`fab rollback` goes to, kept warm; everything a rollback moved away from is stopped."""

from __future__ import annotations

import re
import time

import pytest

from tests.integration.appsite import Site, deployed_id, make_site
from tests.integration.conftest import APP


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory) -> Site:
    return make_site(trixie, tmp_path_factory, "standby", keep_releases=6)


def running(site: Site) -> set[str]:
    """The release ids whose Gunicorn instance is running or starting."""
    out = site.root(f"systemctl list-units --plain --no-legend --state=active,activating,deactivating "
                    f"'{APP}@*.service' | awk '{{print $1}}'")
    return {unit[len(APP) + 1:-len(".service")] for unit in out.split()}


def settled(site: Site, wanted: set[str], seconds: float = 60) -> set[str]:
    """What runs once instances being stopped or started have got there (stops and the standby's start do not
    block the switch), or whatever runs after `seconds`."""
    deadline = time.monotonic() + seconds
    while (now := running(site)) != wanted and time.monotonic() < deadline:
        time.sleep(0.5)
    return now


def test_three_rollbacks_in_a_row_leave_only_the_live_release_and_the_next_target_running(site):
    ids = []
    for n in range(1, 6):
        site.repo.set_version(f"standby-{n}")
        ids.append(deployed_id(site.deploy()))
        if n > 1:  # (before the first, the server may hold another module's releases)
            assert settled(site, {ids[-1], ids[-2]}) == {ids[-1], ids[-2]}
    for back in (3, 2, 1):  # r5 -> r4 -> r3 -> r2
        out = site.rollback()
        assert f"rolled back to {ids[back]}" in out.stdout
        assert f"{ids[back - 1]} kept warm for `fab rollback`" in out.stdout, out.stdout
        assert settled(site, {ids[back], ids[back - 1]}) == {ids[back], ids[back - 1]}
    assert site.answering() == f"standby-2 {ids[1]}"
    listing = site.fab("releases").stdout
    assert re.search(rf"^{ids[0]} .* previous ", listing, re.M), listing
    status = site.fab("status", check=False).stdout
    gunicorn = next(line for line in status.splitlines() if " gunicorn:" in line)
    assert f"{APP}@{ids[0]}.service (the rollback target, warm for an instant rollback)" in gunicorn, gunicorn
    assert gunicorn.count("warm") == 1 and "not the rollback target" not in gunicorn
    # The warm one really is the one the next rollback takes, with nothing to start.
    out = site.rollback()
    assert f"rolled back to {ids[0]}" in out.stdout and "it was still running, nothing to start" in out.stdout
