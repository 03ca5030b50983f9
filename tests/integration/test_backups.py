"""Backups and maintenance mode on a real server: a backup, new rows, a restore that brings the old rows back
(from the server's copy and from an upload of the downloaded one); the scheduled backup's timer set up by
provision (twice: the second changes nothing) and its dump appearing when the service is started, pruned by the
inventory's retention; maintenance on -> 503 with Retry-After from outside -> off -> 200, with a deploy between.
Faults: an upload that is no dump, and a real dump pg_restore cannot restore, are refused and never listed; Ctrl-C
while pg_restore runs says what it left, maintenance mode as read back included; a full disk during an upload is
one message with the free space, and leaves no partial file."""

from __future__ import annotations

import base64
import os
import re
import signal
import stat
import subprocess
import time

import pytest

from tests.integration.appsite import Site, free_bytes, make_site, mount_small
from tests.integration.conftest import APP, DOMAINS, REPO
from tests.outside import http_get

BACKUPS = f"/srv/{APP}/backups"


class BackupSite(Site):
    def run(self, task: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """fab TASK --inventory ... ARGS with no terminal (stdin is /dev/null), as in CI."""
        result = subprocess.run(self.command(task, *args), cwd=REPO, capture_output=True, text=True, timeout=900,
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"fab {task} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n"
                                 f"{result.stderr}")
        return result

    def visit(self, times: int) -> None:
        """Each visit to / adds a row to the counter_hit table."""
        for _ in range(times):
            assert self.get("/").status == 200

    def files(self) -> list[str]:
        return self.root(f"ls -1 {BACKUPS}").split()

    def listed(self) -> list[str]:
        """The names `fab backups` lists."""
        out = self.run("backups").stdout
        return re.findall(r"^  (\S+\.(?:dump|media\.tar\.gz))\s", out, re.M)


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory):
    site = make_site(trixie, tmp_path_factory, "backups", kind=BackupSite)
    site.deploy()
    return site


def test_a_restore_brings_back_the_rows_of_the_backup(site, tmp_path):
    site.visit(3)
    before = site.hits()
    out = site.run("backup", "--media", "--download", str(tmp_path)).stdout
    name = re.search(r"backups/(\S+-manual\.dump) ", out)
    assert name, out
    name = name.group(1)
    assert f"{name[:-len('.dump')]}.media.tar.gz" in site.files()
    # Root's alone on the server, the downloaded copy only the user's.
    assert site.root(f"stat -c '%U %a' {BACKUPS}/{name}").strip() == "root 600"
    local = tmp_path / name
    assert local.is_file() and stat.S_IMODE(local.stat().st_mode) == 0o600
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]

    listing = site.run("backups").stdout
    assert re.search(rf"{re.escape(name)}\s+\S+ \S+\s+\d+ s\s+database, by hand", listing), listing
    again = tmp_path / "again"
    again.mkdir()
    site.run("backups", "--download", name[:-len(".dump")], "--to", str(again))
    assert (again / name).read_bytes() == local.read_bytes()

    site.visit(4)
    assert site.hits() == before + 4
    refused = site.run("restore", name, check=False)
    assert refused.returncode != 0 and "--yes" in refused.stderr, refused.stdout + refused.stderr
    assert site.hits() == before + 4  # nothing changed

    out = site.run("restore", name, "--yes").stdout
    assert site.hits() == before, out
    assert "-before-restore.dump" in out and "maintenance: on" in out and "maintenance: off" in out, out
    assert "schema: the restored migrations match" in out, out
    assert site.get("/version/").status == 200

    # The downloaded copy, uploaded back from the laptop, restores the same way.
    site.visit(2)
    out = site.run("restore", "--upload", str(local), "--yes").stdout
    assert site.hits() == before, out
    uploaded = re.search(r"backups/(\S+-uploaded\.dump)", out)
    assert uploaded and uploaded.group(1) in site.files(), out
    assert ".upload-" not in site.root(f"ls -a /srv/{APP}/releases")


def test_a_restore_that_fails_changes_nothing_and_ends_maintenance(site, tmp_path):
    site.run("maintenance", "off")
    junk = tmp_path / "not-a-dump.dump"
    junk.write_text("hello")
    rows, listed = site.hits(), site.listed()
    failed = site.run("restore", "--upload", str(junk), "--yes", check=False)
    assert failed.returncode != 0 and "not a dump pg_restore can read" in failed.stderr, failed.stderr
    assert "pg_restore: error" in failed.stderr  # pg_restore's own words too
    assert "Traceback" not in failed.stderr
    assert site.hits() == rows
    assert site.get("/version/").status == 200
    # A dump pg_restore refuses is no backup: it is not kept, so `fab backups` does not offer it to restore.
    assert "is not kept as a backup" in failed.stderr, failed.stderr
    assert site.listed() == listed, site.run("backups").stdout
    assert not [name for name in site.files() if name not in listed], site.files()


def test_a_dump_pg_restore_refuses_midway_is_removed_and_not_listed(site, tmp_path):
    """A real dump that pg_restore reads whole but cannot restore as the app's role (an extension only a
    superuser may create): refused in maintenance mode, the database unchanged, the dump not kept."""
    site.run("maintenance", "off")
    site.root("cd /tmp && runuser -u postgres -- dropdb --if-exists gangway_test_fdw && "
              "runuser -u postgres -- createdb gangway_test_fdw && "
              "runuser -u postgres -- psql -Xq -d gangway_test_fdw -c 'create extension file_fdw' && "
              "runuser -u postgres -- pg_dump -Fc gangway_test_fdw > /tmp/gangway-test-fdw.dump && "
              "runuser -u postgres -- dropdb gangway_test_fdw")
    dump = tmp_path / "superuser-only.dump"
    dump.write_bytes(base64.b64decode(site.root("base64 /tmp/gangway-test-fdw.dump && rm /tmp/gangway-test-fdw.dump")))
    site.visit(1)
    rows, listed = site.hits(), site.listed()
    failed = site.run("restore", "--upload", str(dump), "--yes", check=False)
    print(failed.stderr.strip())
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stdout + failed.stderr
    assert "pg_restore of" in failed.stderr and "the database is unchanged" in failed.stderr, failed.stderr
    assert "file_fdw" in failed.stderr  # pg_restore's own words name what it could not do
    uploaded = re.search(r"The uploaded dump (\S+-uploaded\.dump) was removed from", failed.stderr)
    assert uploaded, failed.stderr
    assert uploaded.group(1) not in site.files()
    now = site.listed()
    assert uploaded.group(1) not in now and not [n for n in now if n.endswith("-uploaded.dump") and n not in listed]
    assert "maintenance mode is off again (read back from the server: off)" in failed.stderr, failed.stderr
    assert site.hits() == rows
    assert site.get("/version/").status == 200


# pg_restore drops and re-creates counter_hit, and pg_dump reads it: while another session holds a lock on it
# (access exclusive, for pg_dump to wait too), the step waits there, so Ctrl-C lands in that step, whatever the
# machine's speed.
BLOCKER = "gangway-test-blocker"


def hold_a_lock(site, mode: str = "access share") -> None:
    site.root(f"cd /tmp && setsid nohup runuser -u {APP} -- psql -Xq -d 'dbname={APP} application_name={BLOCKER}' "
              f"-c 'begin; lock table counter_hit in {mode} mode; select pg_sleep(300); commit' "
              "</dev/null >/dev/null 2>&1 &")


def release_the_lock(site) -> None:
    site.root("cd /tmp && runuser -u postgres -- psql -XqtAc "
              f"\"select pg_terminate_backend(pid) from pg_stat_activity where application_name = '{BLOCKER}'\"")


def waits_for_the_lock(site, program: str) -> bool:
    return site.root("cd /tmp && runuser -u postgres -- psql -XtAc \"select count(*) from pg_stat_activity "
                     f"where application_name = '{program}' and wait_event_type = 'Lock'\"").strip() != "0"


def test_ctrl_c_during_a_restore_says_what_it_left_and_the_maintenance_mode_it_reads_back(site):
    site.run("maintenance", "off")
    made = site.run("backup").stdout
    name = re.search(r"backups/(\S+-manual\.dump)", made).group(1)
    hold_a_lock(site)
    run = site.start("restore", name, "--yes")
    try:
        run.wait_for_line(lambda line: "maintenance: on" in line)
        deadline = time.monotonic() + 60
        while not waits_for_the_lock(site, "pg_restore"):
            assert time.monotonic() < deadline and run.process.poll() is None, run.output
            time.sleep(0.3)
        run.process.send_signal(signal.SIGINT)
        done = run.finish(120)
    finally:
        run.stop()
        release_the_lock(site)
    print(done.stdout.strip() + "\n" + done.stderr.strip())
    try:
        assert done.returncode == 130, done.stdout + done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        assert "restore interrupted" in done.stderr, done.stderr
        # The words for a Ctrl-C before the restore began would be false here: pg_restore had started.
        assert "nothing was restored" not in done.stderr and "not touched" not in done.stderr, done.stderr
        assert "-before-restore.dump" in done.stderr, done.stderr  # the way back, named
        served = site.get("/version/")
        if served.status == 503:  # left on: the message says so, and how to end it
            assert "Maintenance mode stays on (read back from the server: on)" in done.stderr, done.stderr
            assert "`fab maintenance off`" in done.stderr, done.stderr
        else:
            assert served.status == 200, served
            assert "maintenance mode is off" in done.stderr.lower(), done.stderr
    finally:
        deadline = time.monotonic() + 120  # the interrupted run's pg_restore ends (or has ended) on the server
        while site.root("pgrep -x pg_restore || true").strip() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "maintenance mode is off" in site.run("maintenance", "off").stdout
    assert site.get("/version/").status == 200


def test_ctrl_c_during_the_backup_before_a_restore_says_nothing_was_restored_and_maintenance_is_off(site):
    site.run("maintenance", "off")
    name = re.search(r"backups/(\S+-manual\.dump)", site.run("backup").stdout).group(1)
    rows = site.hits()
    hold_a_lock(site, "access exclusive")  # the backup taken before the restore (pg_dump) waits for it
    run = site.start("restore", name, "--yes")
    try:
        run.wait_for_line(lambda line: line.startswith("restore "))
        deadline = time.monotonic() + 60
        while not waits_for_the_lock(site, "pg_dump"):
            assert time.monotonic() < deadline and run.process.poll() is None, run.output
            time.sleep(0.3)
        run.process.send_signal(signal.SIGINT)
        done = run.finish(120)
    finally:
        run.stop()
        release_the_lock(site)
    print(done.stdout.strip() + "\n" + done.stderr.strip())
    try:
        assert done.returncode == 130 and "Traceback" not in done.stderr, done.stdout + done.stderr
        assert ("restore interrupted: nothing was restored and this restore did not turn maintenance mode on "
                "(read back from the server: off)") in done.stderr, done.stderr
        assert "maintenance: on" not in done.stdout
        assert site.get("/version/").status == 200  # no maintenance page through the site's name
        assert site.hits() == rows
        # pg_dump goes on on the server once its lock is free: the message names the backup that may appear.
        taking = re.search(r"The backup it was taking first \((\S+-before-restore\.dump)\) may still finish",
                           done.stderr)
        assert taking, done.stderr
    finally:
        deadline = time.monotonic() + 120  # the interrupted run's pg_dump ends (or has ended) on the server
        while site.root("pgrep -x pg_dump || true").strip() and time.monotonic() < deadline:
            time.sleep(0.5)
    assert taking.group(1) in site.listed()  # as the message said
    assert not [f for f in site.files() if f.endswith(".part")], site.files()


def test_a_full_disk_during_a_restore_upload_is_one_clear_message_and_leaves_no_part(site, tmp_path):
    site.run("maintenance", "off")
    made = site.run("backup", "--download", str(tmp_path)).stdout
    local = tmp_path / re.search(r"backups/(\S+-manual\.dump)", made).group(1)
    assert local.is_file(), made
    releases = f"/srv/{APP}/releases"
    before, rows, listed = site.answering(), site.hits(), site.listed()
    uploads = f"ls -a {releases} | grep -c '^\\.upload-' || true"
    assert site.root(uploads).strip() == "0"
    mount_small(site, releases, "1024k", keep_content=True)  # the releases stay where they were
    try:
        site.root(f"head -c {free_bytes(site, releases) - 4096} /dev/zero > {releases}/.filler")
        free = free_bytes(site, releases)
        print(f"dump {local.stat().st_size / 1024:.1f} KiB; free in releases/ {free / 1024:.1f} KiB")
        failed = site.run("restore", "--upload", str(local), "--yes", check=False)
        print(failed.stderr.strip())
        assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stdout + failed.stderr
        assert failed.stderr.count("not enough disk space") == 1, failed.stderr
        assert re.search(r"\d+\.\d MiB free in /srv/\S+/releases/", failed.stderr), failed.stderr
        assert "nothing was restored" in failed.stderr, failed.stderr
        assert "it needs about" in failed.stderr and "MiB kept spare" in failed.stderr, failed.stderr
        assert site.root(uploads).strip() == "0", site.root(f"ls -la {releases}")
        assert site.answering() == before  # no maintenance page either: nothing was touched
    finally:
        site.root(f"umount {releases}")
    assert site.root(uploads).strip() == "0"
    assert site.hits() == rows and site.listed() == listed
    assert site.answering() == before


def test_provision_sets_up_the_timer_and_its_backup_appears_when_it_runs(site):
    shared = site.inventory.read_text()
    site.inventory.write_text(shared + 'backups:\n  time: "04:30"\n  keep_daily: 2\n  keep_weekly: 1\n')
    try:
        first = site.fab("provision").stdout
        assert "changed   scheduled backups" in first, first
        second = site.fab("provision").stdout
        assert re.search(r"recap \S+: \d+ steps, 0 changed", second), second
        assert site.root(f"systemctl is-enabled {APP}-backup.timer").strip() == "enabled"
        timer = site.root(f"systemctl cat {APP}-backup.timer")
        assert "OnCalendar=*-*-* 04:30:00" in timer and "Persistent=true" in timer
        assert "RandomizedDelaySec=" in timer

        manual = [f for f in site.files() if f.endswith("-manual.dump")]
        for _ in range(3):
            site.root(f"systemctl start {APP}-backup.service")
        daily = [f for f in site.files() if f.endswith("-daily.dump")]
        # All three on one day: the retention keeps the newest of today; hand-made dumps are not its business.
        assert len(daily) == 1, site.files()
        assert [f for f in site.files() if f.endswith("-manual.dump")] == manual
        assert site.root(f"stat -c '%U %a' {BACKUPS}/{daily[0]}").strip() == "root 600"
        assert not [f for f in site.files() if f.endswith(".part")]
        assert "database, scheduled" in site.run("backups").stdout
    finally:  # the server is shared: later modules expect it provisioned with the default retention
        site.inventory.write_text(shared)
        site.fab("provision")


def test_maintenance_mode_answers_503_from_outside_and_deploys_still_work(site):
    out = site.run("maintenance", "on").stdout
    assert "maintenance mode is on" in out, out
    for path in ("/", "/version/", "/static/counter/style.css", "/media/x"):
        response = site.get(path)
        assert response.status == 503, (path, response)
        assert response.header("Retry-After") == "300", response.headers
        assert "Down for maintenance" in response.body
    # ACME challenges are still answered (a 404 for one that does not exist), so certificates renew.
    acme = http_get(site.server.host.address, DOMAINS[0], "/.well-known/acme-challenge/none")
    assert acme.status == 404, acme
    deployed = site.run("deploy").stdout
    assert "maintenance mode is on" in deployed, deployed
    assert site.get("/").status == 503
    assert "maintenance mode is off" in site.run("maintenance", "off").stdout
    assert site.get("/version/").status == 200
