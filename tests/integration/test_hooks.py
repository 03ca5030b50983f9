"""Release hooks (app.hooks) on the shared Debian 13 server: an after_build hook writes into the release as the
build user (with its arguments reaching it verbatim), later hooks run as the app user with the app's
environment; a failing after_migrate hook leaves the live release serving through nginx with the migration
reversed; a failing after_switch hook is reported while the new release stays live; a hook that hangs is
stopped at its timeout, and so is one whose deploy is interrupted with Ctrl-C."""

from __future__ import annotations

import re
import shlex
import signal
import time

import pytest

from tests.integration.appsite import GOOD_MIGRATION, Site, deployed_id, make_site
from tests.integration.conftest import APP, DOMAINS
from tests.integration.inventory import write_inventory

# A word the after_build hook must receive as it is: systemd would expand $HOME and %n, a shell $(id).
VERBATIM = "a$HOME%n$(id)'\""
PROOF = "hook-proof.txt"
NO_HOOK_UNITS = f"systemctl list-units --all --plain --no-legend '{APP}-hook-*'"


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory) -> Site:
    return make_site(trixie, tmp_path_factory, "hooks")


def with_hooks(site: Site, **points) -> None:
    """The site's inventory, rewritten with these app.hooks."""
    write_inventory(site.server.host, site.inventory, app=APP, domains=DOMAINS, source=site.repo.path,
                    health_check="/healthz/", hooks=points)


def failure(out) -> str:
    assert out.returncode == 1, out.stdout + out.stderr
    return out.stderr[out.stderr.index("deploy failed: "):]


def new_release(out) -> str:
    match = re.search(r"^deploy (\S+) \(", out.stdout, re.M)
    assert match, out.stdout
    return match.group(1)


def test_hooks_run_at_their_points_as_their_users_in_the_release(site):
    with_hooks(site, after_build=[f"/bin/sh -c 'printf \"%s\\n\" \"$1\" \"$(id -un)\" > {PROOF}' hook "
                                  + shlex.quote(VERBATIM)],
               after_migrate=["/usr/bin/id -un"],
               after_switch=["python -c 'import os; print(\"release\", os.environ[\"GANGWAY_RELEASE\"])'"])
    site.repo.set_version("hooks-1")
    out = site.deploy()
    release = deployed_id(out)
    assert "changed   hook after_build: `/bin/sh -c" in out.stdout, out.stdout
    # The file is in the release (sealed by root after the checks), written by the build user.
    assert site.root(f"cat /srv/{APP}/releases/{release}/{PROOF}").splitlines() == [VERBATIM, f"{APP}_build"]
    assert site.root(f"stat -c %U /srv/{APP}/releases/{release}/{PROOF}").strip() == "root"
    assert f"  | {APP}\n  changed   hook after_migrate: `/usr/bin/id -un`" in out.stdout, out.stdout
    assert f"  | release {release}\n  changed   hook after_switch" in out.stdout, out.stdout
    assert site.answering() == f"hooks-1 {release}"
    assert site.root(NO_HOOK_UNITS).strip() == ""


def test_a_failing_after_migrate_hook_reverses_the_migration_and_the_live_release_keeps_serving(site):
    live = site.answering().split()[1]
    with_hooks(site, after_migrate=["/bin/sh -c 'echo cache warm-up failed >&2; exit 3'"])
    site.repo.commit("a column and a failing warm-up", **{"counter/migrations/0002_hit_agent.py": GOOD_MIGRATION,
                                                          "mysite__version.py": 'VERSION = "hooks-2"\n'})
    out = site.deploy(check=False)
    message, release = failure(out), new_release(out)
    assert ("the after_migrate hook, `/bin/sh -c 'echo cache warm-up failed >&2; exit 3'`, failed with exit "
            "status 3; the last lines of its output:\ncache warm-up failed") in message, message
    assert f"{live} is still serving (read back: the live link points at its socket)" in message
    assert "the 1 migration(s) it applied were reversed (read back from the database: counter.0002_hit_agent)" \
        in message
    assert site.answering() == f"hooks-1 {live}"  # through nginx, by the site's name
    assert site.sql("select count(*) from django_migrations where app = 'counter' and name = '0002_hit_agent'") == "0"
    assert release in site.ls("failed")


def test_a_failing_after_switch_hook_is_reported_and_the_new_release_stays_live(site):
    with_hooks(site, after_switch=["/bin/sh -c 'echo search index unreachable; exit 4'"])
    site.repo.set_version("hooks-3")
    out = site.deploy(check=False)
    message, release = failure(out), new_release(out)
    assert message.startswith(f"deploy failed: {release} is live and stays live (read back: the live link points "
                              "at its socket), but the after_switch hook"), message
    assert "failed with exit status 4; the last lines of its output:\nsearch index unreachable" in message
    assert "FAILED    hook after_switch" in out.stdout
    assert site.answering() == f"hooks-3 {release}"
    assert '"result": "failed"' in site.root(f"tail -n 1 /srv/{APP}/state/history.log")  # the audit line


def test_a_hook_that_hangs_is_stopped_at_its_timeout(site):
    live = site.answering().split()[1]
    with_hooks(site, after_migrate=[{"command": "/bin/sleep 600", "timeout": 3}])
    site.repo.set_version("hooks-4")
    message = failure(site.deploy(check=False))
    assert "the after_migrate hook, `/bin/sleep 600`, timed out after 3 s (its timeout): systemd stopped it" \
        in message, message
    assert f"{live} is still serving" in message and site.answering() == f"hooks-3 {live}"
    assert site.root(NO_HOOK_UNITS).strip() == ""


def test_ctrl_c_during_a_hook_leaves_no_hook_running(site):
    with_hooks(site, after_migrate=["/bin/sleep 600"])
    site.repo.set_version("hooks-5")
    run = site.start("deploy")
    try:
        run.wait_for_line(lambda line: "migrations:" in line)
        deadline = time.monotonic() + 30
        while f"{APP}-hook-" not in site.root(NO_HOOK_UNITS) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "running" in site.root(NO_HOOK_UNITS)
        run.process.send_signal(signal.SIGINT)
        out = run.finish(60)
    finally:
        run.stop()
    assert out.returncode == 130, run.output
    assert site.root(NO_HOOK_UNITS).strip() == ""
