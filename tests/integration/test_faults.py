"""Faults a real server meets, on its own freshly provisioned Debian 13 server (these tests break things, so
they do not share the session's server): `fab unlock` against a run that is alive, a disk that fills up
during the upload or the build, PostgreSQL stopping between migrate and switch, a connection that is lost
mid-deploy. Each fault must end in one clear message, nothing half-written left behind, the live release
still serving, and a next deploy that works.

The tests run in order and build on each other: the full upload disk comes before any deploy.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from tests.integration.appsite import GOOD_MIGRATION, Run, Site, deployed_id, free_bytes, make_site, mount_small
from tests.integration.conftest import APP, provision_fresh

ROOT = f"/srv/{APP}"

# Files that are empty by design, which the checks for half-written files leave out: the lock files (flock
# needs a file, not content) and the marker a finished Python environment gets.
EXPECTED_EMPTY = (re.compile(rf"^{ROOT}/state/deploy\.(lock|work)$"), re.compile(rf"^{ROOT}/venvs/[^/]+/\.complete$"))

UNHEALTHY_AFTER_3_S = '''

import time as _time

from django.http import HttpResponseServerError


def _unhealthy(request):
    _time.sleep(3)
    return HttpResponseServerError("unhealthy on purpose")


urlpatterns.insert(0, path("healthz/", _unhealthy))
'''

HEALTHY_AFTER_6_S = '''

import time as _time

from django.http import HttpResponse


def _slow_health(request):
    _time.sleep(6)
    return HttpResponse("ok")


urlpatterns.insert(0, path("healthz/", _slow_health))
'''


class FaultSite(Site):
    def add_requirement(self, line: str) -> str:
        return self.repo.commit(f"requirement {line}", **{
            "requirements.txt": (self.repo.path / "requirements.txt").read_text() + line + "\n"})

    def deploy_under_way(self, requirement: str) -> "Run":
        """A deploy of a new commit that adds REQUIREMENT (so it builds a new Python environment), running in
        the background once it has printed its first line."""
        self.add_requirement(requirement)
        run = self.start("deploy")
        try:
            run.wait_for_line(lambda line: line.startswith("deploy "))
        except BaseException:
            run.stop()
            raise
        return run

    def empty_files(self) -> set[str]:
        return set(self.root(f"find {ROOT} -type f -size 0").split())

    def leftovers(self, empty_before: set[str]) -> list[str]:
        """What a failed run left half-written: partial archives, and empty files that were not there before
        (complete Python environments hold many, e.g. py.typed and __init__.py) and are neither a marker nor
        one of the project's own empty files in a release kept in releases/ or failed/."""
        partial = self.root(f"find {ROOT} -name '*.tar.gz*'").split()
        project_empty = [f for f in self.repo.git("ls-files").split() if (self.repo.path / f).stat().st_size == 0]
        expected = [*EXPECTED_EMPTY, *(re.compile(rf"^{ROOT}/(releases|failed)/[^/]+/{re.escape(f)}$")
                                       for f in project_empty)]
        empty = [f for f in self.empty_files() - empty_before if not any(p.match(f) for p in expected)]
        return partial + sorted(empty)


def one_clear_failure(out: subprocess.CompletedProcess) -> None:
    assert out.returncode == 1, f"{out.returncode}\n{out.stdout}\n{out.stderr}"
    assert "Traceback" not in out.stderr, out.stderr
    assert not re.search(r"^deployed ", out.stdout, re.M), out.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = provision_fresh("trixie", tmp_path_factory)
    yield server
    server.host.stop()


@pytest.fixture(scope="module")
def site(server, tmp_path_factory) -> FaultSite:
    return make_site(server, tmp_path_factory, "faults", kind=FaultSite)


# --- a full disk during the upload (before any deploy) -------------------------------------------------------

def test_a_full_disk_during_the_upload_is_one_clear_message_and_leaves_nothing_half_written(site):
    archive = int(subprocess.run("git archive --format=tar.gz HEAD | wc -c", shell=True, cwd=site.repo.path,
                                 capture_output=True, text=True, check=True).stdout)
    releases = f"{ROOT}/releases"
    empty_before = site.empty_files()
    mount_small(site, releases, "1m")
    try:
        room = free_bytes(site, releases)
        site.root(f"head -c {room - 4096} /dev/zero > {releases}/.filler")  # leaves one 4 KiB page
        free = free_bytes(site, releases)
        print(f"release archive {archive / 1024:.1f} KiB; free on the full releases/ {free / 1024:.1f} KiB")
        assert free < archive
        out = site.deploy(check=False)
        print(out.stderr.strip())
        one_clear_failure(out)
        assert "not enough disk space" in out.stderr and "MiB free" in out.stderr, out.stderr
        assert site.leftovers(empty_before) == []
    finally:
        site.root(f"umount {releases}")
    assert site.leftovers(empty_before) == []
    out = site.deploy()
    release = deployed_id(out)
    assert site.answering() == f"1 {release}"


# --- fab unlock against a run that is alive ------------------------------------------------------------------

def test_unlock_refuses_to_end_a_run_that_is_still_connected(site):
    run = site.deploy_under_way("six>=1.16")
    try:
        t0 = time.monotonic()
        refused = site.fab("unlock", check=False)
        print(f"unlock refused in {time.monotonic() - t0:.2f} s: {refused.stderr.strip()}")
        assert refused.returncode != 0
        assert "still connected" in refused.stderr and "--force" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        done = run.finish()
    finally:
        run.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    release = deployed_id(done)
    assert site.answering() == f"1 {release}"


def live_link(site: Site) -> str:
    """The release the server's live link (`current`) points at, read on the server."""
    return site.root(f"readlink {ROOT}/current").strip().rsplit("/", 1)[-1]


def test_unlock_force_ends_a_live_run_which_then_does_not_claim_success(site):
    before = site.answering()
    live = before.split()[1]
    run = site.deploy_under_way("idna>=3")
    try:
        forced = site.fab("unlock", "--force")
        print(forced.stdout.strip())
        assert "cleared the lock held by" in forced.stdout
        # Forced while the run builds: unlock waits for that step to end, then says what is live, read back.
        said = re.search(r"^\S+: (\S+) is still live; that run stops before its next step$", forced.stdout, re.M)
        assert said and said[1] == live == live_link(site), forced.stdout
        done = run.finish()
    finally:
        run.stop()
    print(f"the run whose lock was cleared: exit {done.returncode}: {done.stderr.strip()[-400:]}")
    assert done.returncode != 0, done.stdout
    assert not re.search(r"^deployed ", done.stdout, re.M), done.stdout
    assert site.answering() == before
    # Nothing is left holding the lock: the next deploy goes ahead.
    release = deployed_id(site.deploy())
    assert site.answering() == f"1 {release}"


def test_unlock_force_during_the_start_step_says_truly_which_release_is_live(site):
    good = site.repo.git("rev-parse", "HEAD")
    before = site.answering().split()[1]
    site.repo.commit("a health check that takes a while", **{
        "mysite__urls.py": (site.repo.path / "mysite/urls.py").read_text() + HEALTHY_AFTER_6_S})
    run = site.start("deploy")
    try:
        new = run.wait_for_line(lambda line: line.startswith("deploy ")).split()[1]
        run.wait_for_line(lambda line: re.match(r" +(ok|changed) +migrations: ", line))
        # The start step runs: the new release's instance is up and its health check (6 s an answer) under way.
        deadline = time.monotonic() + 60
        while site.root(f"systemctl is-active {APP}@{new}.service", check=False).strip() not in ("active",
                                                                                                "activating"):
            assert time.monotonic() < deadline and run.process.poll() is None, run.output
            time.sleep(0.2)
        forced = site.fab("unlock", "--force")
        print(forced.stdout.strip())
        done = run.finish()
    finally:
        run.stop()
        site.repo.reset(good)
    print(f"the run whose lock was cleared: exit {done.returncode}: {done.stderr.strip()[-400:]}")
    assert "cleared the lock held by" in forced.stdout and "its connection was still alive" in forced.stdout
    # Start and switch are one step on the server: it ran to its end, and unlock says so, as the server shows it.
    said = re.search(r"^\S+: the run it held had already switched: (\S+) is live$", forced.stdout, re.M)
    assert said, forced.stdout
    assert said[1] == new != before, forced.stdout
    assert live_link(site) == new and site.answering() == f"1 {new}"
    # The run's own words agree: it switched; then either no step was left (it says it deployed, and that its lock
    # was taken away) or it stopped before the next one (pruning old releases) and does not claim a deploy.
    assert re.search(rf"^  changed +switch: {new} is live", done.stdout, re.M), done.stdout
    if re.search(r"^deployed ", done.stdout, re.M):
        assert done.returncode == 0 and "lock: this run's deploy lock" in done.stdout, done.stdout + done.stderr
        assert "deploy failed" not in done.stderr, done.stderr
    else:
        assert done.returncode == 1 and "stopped before its next step" in done.stderr, done.stdout + done.stderr
    release = deployed_id(site.deploy())
    assert site.answering() == f"1 {release}"


# --- a full disk during the build ----------------------------------------------------------------------------

def test_a_full_disk_during_the_build_is_named_and_the_live_release_keeps_serving(site):
    before = site.answering()
    venvs = f"{ROOT}/venvs"
    site.add_requirement("attrs>=23")
    empty_before = site.empty_files()
    mount_small(site, venvs, "4096k", keep_content=True)  # the environments built so far, and 4 MiB more
    print(f"free on the nearly full venvs/: {free_bytes(site, venvs) / 2**20:.1f} MiB")
    try:
        out = site.deploy(check=False)
        print(out.stderr.strip()[-600:])
        one_clear_failure(out)
        assert "ran out of disk space" in out.stderr and "MiB free" in out.stderr, out.stderr
        assert site.leftovers(empty_before) == []
        assert site.answering() == before
    finally:
        # Room again, on the same mount: an unmount now would hide the environment the next deploy builds.
        site.root(f"mount -o remount,size=1G {venvs}")
    release = deployed_id(site.deploy())
    assert site.answering() == f"1 {release}"


# --- a connection lost mid-deploy ----------------------------------------------------------------------------

# Precisely the deploy's own connection: the lock holder's recorded pid, then each sshd-session process above
# it. The holder runs over the deploy's one SSH connection (the same transport as its commands), and this
# command arrives over another connection, whose sshd-session processes are not ancestors of that holder: the
# test's own commands and anything else on the server are untouched. Killing the per-connection processes
# closes the TCP connection from the server's side, as a network that drops it would.
CUT_THE_DEPLOYS_CONNECTION = rf"""
pid=$(sed -n 's/.*"pid": \([0-9][0-9]*\).*/\1/p' {ROOT}/state/deploy.lock.info)
[ -n "$pid" ] && [ -d "/proc/$pid" ] || {{ echo "no lock holder running (pid '$pid')" >&2; exit 1; }}
a=$pid; sessions=; n=0
while [ "$a" -gt 1 ] && [ $n -lt 64 ]; do
  [ "$(cat /proc/$a/comm)" = sshd-session ] && sessions="$sessions $a"
  a=$(sed 's/.*) //' /proc/$a/stat | cut -d ' ' -f 2); n=$((n + 1))
done
[ -n "$sessions" ] || {{ echo "the holder $pid has no sshd-session above it" >&2; exit 1; }}
echo $sessions
# The session's processes end together: one may be gone by the time its signal comes.
kill -KILL $sessions 2>/dev/null || true
"""


def test_a_lost_connection_is_called_that_and_the_next_deploy_works(site):
    before = site.answering()
    run = site.deploy_under_way("packaging>=23")
    try:
        deadline = time.monotonic() + 60
        while "pip" not in site.root("pgrep -af '[p]ip install' || true"):  # building: pip runs
            assert time.monotonic() < deadline and run.process.poll() is None, run.output
            time.sleep(0.3)
        killed = site.root(CUT_THE_DEPLOYS_CONNECTION).split()
        cut = time.monotonic()
        done = run.finish(120)
        print(f"cut the deploy's connection (sshd-session {' '.join(killed)}); it ended "
              f"{time.monotonic() - cut:.2f} s later: {done.stderr.strip()[-400:]}")
    finally:
        run.stop()
    one_clear_failure(done)
    assert "connection to" in done.stderr and "was lost" in done.stderr, done.stderr
    assert "building it failed" not in done.stderr
    assert site.answering() == before
    t0 = time.monotonic()
    release = deployed_id(site.deploy())
    print(f"the next deploy (it waits for the cut run's pip on the server): {time.monotonic() - t0:.1f} s")
    assert site.answering() == f"1 {release}"


# --- PostgreSQL stops between migrate and switch (last: it leaves the database ahead of the code) ------------

def test_postgres_stopping_after_migrate_names_the_migration_and_how_to_reverse_it(site):
    before, good = site.answering(), site.repo.git("rev-parse", "HEAD")
    site.repo.commit("a field, and a release that is unhealthy", **{
        "counter__migrations__0002_hit_agent.py": GOOD_MIGRATION,
        "counter__models.py": (site.repo.path / "counter/models.py").read_text()
        + "    agent = models.CharField(max_length=200, default='')\n",
        "mysite__urls.py": (site.repo.path / "mysite/urls.py").read_text() + UNHEALTHY_AFTER_3_S})
    run = site.start("deploy")
    try:
        migrated = run.wait_for_line(lambda line: "migrations" in line and "applied" in line)
        t0 = time.monotonic()
        site.root("systemctl stop postgresql")
        print(f"{migrated.strip()}\nPostgreSQL stopped {time.monotonic() - t0:.2f} s after that line")
        done = run.finish()
    finally:
        run.stop()
    try:
        print(done.stderr.strip()[-1200:])
        one_clear_failure(done)
        assert "counter.0002_hit_agent" in done.stderr, done.stderr
        # What to run once PostgreSQL answers again: a rollback to the live release that reverses, with the
        # failed release's code (kept in failed/), the migrations the live code does not have.
        way_back = re.search(r"`fab (rollback --to (\S+) --migrate-back)`", done.stderr)
        assert way_back, done.stderr
        # /version/ does not use the database: the live release still answers it.
        assert site.answering() == before
    finally:
        site.root("systemctl start postgresql")

    def ahead(out: subprocess.CompletedProcess) -> list[str]:
        return [line for line in (out.stdout + out.stderr).splitlines()
                if "ahead" in line and "counter.0002_hit_agent" in line]

    listing = site.fab("releases")
    assert ahead(listing), listing.stdout + listing.stderr
    print(ahead(listing)[0])
    site.repo.reset(good)
    out = site.deploy(check=False)
    print(f"deploy of the good commit: exit {out.returncode}")
    assert ahead(out), out.stdout + out.stderr
    # The way back the failed deploy printed is exact: run as it says, it puts the schema back.
    undone = site.fab(*way_back.group(1).split(), check=False)
    assert undone.returncode == 0, f"{way_back.group(0)}\n{undone.stdout}\n{undone.stderr}"
    assert "counter.0002_hit_agent" in undone.stdout + undone.stderr
    assert site.sql("select count(*) from django_migrations where app = 'counter'") == "1"
    assert not ahead(site.fab("releases"))
