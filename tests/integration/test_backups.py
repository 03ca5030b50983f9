"""Backups and maintenance mode on a real server: a backup, new rows, a restore that brings the old rows back
(from the server's copy and from an upload of the downloaded one); the scheduled backup's timer set up by
provision (twice: the second changes nothing) and its dump appearing when the service is started, pruned by the
inventory's retention; maintenance on -> 503 with Retry-After from outside -> off -> 200, with a deploy between."""

from __future__ import annotations

import os
import re
import stat
import subprocess

import pytest

from tests.integration.appsite import Site, make_site
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
    junk = tmp_path / "not-a-dump.dump"
    junk.write_text("hello")
    rows = site.hits()
    failed = site.run("restore", "--upload", str(junk), "--yes", check=False)
    assert failed.returncode != 0 and "not a dump pg_restore can read" in failed.stderr, failed.stderr
    assert "pg_restore: error" in failed.stderr  # pg_restore's own words too
    assert site.hits() == rows
    assert site.get("/version/").status == 200


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
