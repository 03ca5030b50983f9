"""Backups and maintenance mode without a server: the retention rule of the scheduled backup as a pure function,
the scripts (shellcheck-clean, hostile names kept inert, a dump and a restore run against stub commands), the
names and kinds `fab backups` shows, the schema comparison after a restore, and the provisioning step's units."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import stat
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tasks.commands import backup as commands, release as release_commands, shell
from tasks.facts import backups as listing, releases
from tasks import timestamps
from tasks.cli import backups as tasks_backups
from tasks.cli.backups import schema_difference, table
from tasks.timestamps import age
from tasks.cli.deploy import DeployError
from tasks.inventory import Backups, Host, Inventory, App
from tasks.layout import Layout
from tasks.provisioning import Server, backups as provisioning
from tasks.commands.render import TEMPLATES
from tasks.commands.database import Client
from tests.unit.shellcheck import assert_shellcheck_clean
from tests.unit.test_release_commands import HOSTILE, run

LAYOUT = Layout("mysite")


def _script_module():
    spec = importlib.util.spec_from_file_location("scheduled_backup", TEMPLATES / "backups" / "backup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCHEDULED = _script_module()


def daily(when: datetime) -> str:
    return when.strftime(timestamps.STAMP) + "-daily.dump"


# --- retention ------------------------------------------------------------------------------------------------

def test_retention_keeps_the_newest_of_each_of_the_last_days_and_weeks():
    start = datetime(2026, 1, 1, 3, 15)  # a Thursday
    names = [daily(start + timedelta(days=d, hours=h)) for d in range(60) for h in (0, 12)]
    kept = SCHEDULED.keep(names, keep_daily=7, keep_weekly=4)
    newest_days = {daily(start + timedelta(days=d, hours=12)) for d in range(53, 60)}
    assert newest_days <= kept
    weekly = kept - newest_days
    # The newest of each of the 4 newest ISO weeks; the newest week's is already among the daily ones.
    weeks = {datetime.strptime(n[:16], timestamps.STAMP).isocalendar()[:2] for n in kept}
    assert len(weeks) == 4 and len(weekly) <= 3
    for name in weekly:  # each is the last dump of its week (a Sunday, 12:00)
        assert datetime.strptime(name[:16], timestamps.STAMP).isoweekday() == 7 and name[9:11] == "15"


def test_retention_of_dumps_of_one_day_keeps_only_the_newest():
    names = [daily(datetime(2026, 3, 1, h)) for h in range(5)]
    assert SCHEDULED.keep(names, keep_daily=2, keep_weekly=1) == {names[-1]}


def test_retention_leaves_every_other_file_alone_and_zero_weekly_keeps_only_days():
    others = ["r1-before-migrate.dump", "20260101T000000Z-manual.dump", "x.media.tar.gz",
              "20260101T000000Z-daily.dump.part", "20261399T000000Z-daily.dump"]
    names = others + [daily(datetime(2026, 1, d)) for d in range(1, 20)]
    kept = SCHEDULED.keep(names, keep_daily=3, keep_weekly=0)
    assert kept == set(others) | {daily(datetime(2026, 1, d)) for d in (17, 18, 19)}


def test_retention_of_nothing_is_nothing():
    assert SCHEDULED.keep([], 7, 4) == set()


def test_the_scheduled_backup_dumps_owner_only_then_prunes(tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir()
    old = [daily(datetime(2026, 1, d)) for d in range(1, 10)]
    for name in old + ["r-before-migrate.dump", "20260101T000000Z-daily.dump.part"]:
        (backups / name).write_text("old")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "runuser").write_text("#!/bin/sh\necho \"dump of $6\"\n")
    (bin_dir / "runuser").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    command = tmp_path / "command.json"
    command.write_text(json.dumps(Client("mysite").argv("pg_dump", "--format=custom", dumper=True)))
    out = subprocess.run(["python3", str(TEMPLATES / "backups" / "backup.py"), str(command), str(backups), "2", "1"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    files = sorted(os.listdir(backups))
    new = [f for f in files if f not in old and f.endswith("-daily.dump")]
    assert len(new) == 1 and (backups / new[0]).read_text() == "dump of --dbname=mysite\n"
    assert stat.S_IMODE((backups / new[0]).stat().st_mode) == 0o600
    # Today's and the newest old day's (the weekly one may be the same); the other dumps untouched.
    assert "r-before-migrate.dump" in files and not [f for f in files if f.endswith(".part")]
    assert old[-1] in files and old[0] not in files


def test_a_failed_scheduled_dump_leaves_no_file(tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "runuser").write_text("#!/bin/sh\necho half; exit 1\n")
    (bin_dir / "runuser").chmod(0o755)
    command = tmp_path / "command.json"
    command.write_text(json.dumps(Client("mysite").argv("pg_dump", "--format=custom", dumper=True)))
    out = subprocess.run(["python3", str(TEMPLATES / "backups" / "backup.py"), str(command), str(backups), "7", "4"],
                         capture_output=True, text=True, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert out.returncode == 1 and "no backup was kept" in out.stderr and os.listdir(backups) == []


def test_the_deploy_prunes_only_the_dumps_that_are_not_scheduled():
    files = listing.parse_listing("b-before-migrate.dump\t1\t200\t500\na-before-migrate.dump\t1\t100\t500\n"
                                  "20260103T000000Z-daily.dump\t1\t300\t500\n"
                                  "20260104T000000Z-manual.dump\t1\t400\t500\n")
    assert releases.backups_to_prune(listing.dumps(files), 2) == ["a-before-migrate.dump"]


# --- names, kinds, listing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kind", [
    ("20260101T031500Z-daily.dump", "database, scheduled"),
    ("20260101T031500Z-manual.dump", "database, by hand"),
    ("20260101T031500Z-manual.media.tar.gz", "media, by hand"),
    ("20260101T000000Z-abcdef1-before-migrate.dump", "database, before a migration"),
    ("20260101T000000Z-before-restore.dump", "database, before a restore"),
    ("20260101T000000Z-uploaded.dump", "database, uploaded"),
    ("mine.dump", "database"),
])
def test_each_backup_says_what_it_is(name, kind):
    assert commands.kind_of(name) == kind


@pytest.mark.parametrize("value", HOSTILE + ["../etc/passwd", "/etc/shadow", "", ".hidden"])
def test_a_hostile_backup_name_is_refused(value):
    assert commands.dump_name(value) is None


def test_a_name_may_leave_out_dump():
    assert commands.dump_name("20260101T000000Z-manual") == "20260101T000000Z-manual.dump"
    assert commands.dump_name("x.dump") == "x.dump"


def test_the_listing_is_oldest_first_with_ages():
    out = "b.dump\t2048\t1700000100.5\t1700000200\na.media.tar.gz\t10\t1700000000.0\t1700000200\njunk\n"
    files = listing.parse_listing(out, 0)
    assert files == [("a.media.tar.gz", 10, 200), ("b.dump", 2048, 100)]
    assert listing.dumps(files) == [("b.dump", 2048, 100)] and listing.newest_dump(files).name == "b.dump"
    assert listing.newest_dump(listing.parse_listing("empty.dump\t0\t1\t2\n")) is None
    assert listing.parse_listing("", 1) is None  # could not be listed: never "no backups"
    rows = table(files)
    assert "2.0 KiB" in rows[2] and "100 s" in rows[2] and rows[1].rstrip().endswith("media")


@pytest.mark.parametrize("seconds, words", [(5, "5 s"), (119, "119 s"), (120, "2 min"), (7200, "2 h"),
                                            (3 * 86400, "3 days")])
def test_ages_read_at_a_glance(seconds, words):  # one wording for backups and status alike
    assert age(seconds) == words


# --- scripts ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("script", [
    shell.script(release_commands.backup(LAYOUT, Client("mysite"), "20260101T000000Z-manual")),
    shell.script(commands.media_archive(LAYOUT, "20260101T000000Z-manual")),
    shell.script(commands.adopt_upload(LAYOUT, Client("mysite"), LAYOUT.upload("t0", "x.dump"), "20260101T000000Z-uploaded")),
    shell.script(commands.restore_database(LAYOUT, Client("mysite"), "x.dump")),
    shell.script(commands.exists(LAYOUT, "x.dump"), commands.readable_copy(LAYOUT, "x.dump", "deploy", LAYOUT.upload("t0", "x.dump"))),
    shell.script(commands.maintenance_on(LAYOUT, "me", "now"), commands.maintenance_off(LAYOUT)),
    listing.listing_command(LAYOUT),
    release_commands.maintenance_probe(LAYOUT).command,
], ids=["backup", "media", "adopt", "restore", "download", "maintenance", "listing", "maintenance probe"])
def test_every_backup_script_passes_shellcheck(script):
    assert_shellcheck_clean(script)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_names_and_paths_stay_values(tmp_path, value):
    layout = Layout(str(tmp_path / value))  # every path below has the hostile value in it
    stubs = {"runuser": "cat >/dev/null 2>&1; echo dumped", "chown": "true", "chmod": "true", "install": "true"}
    for script in (release_commands.backup(layout, Client(value), value), commands.media_archive(layout, value),
                   commands.adopt_upload(layout, Client(value), f"{tmp_path}/{value}.up", value),
                   commands.restore_database(layout, Client(value), value), commands.exists(layout, value),
                   commands.readable_copy(layout, value, value, value), commands.maintenance_on(layout, value, value),
                   commands.maintenance_off(layout)):
        run(shell.script(script), tmp_path, stubs)
        assert not (tmp_path / "CANARY").exists(), script


def test_a_dump_is_written_owner_only_under_a_temporary_name_and_a_failed_one_leaves_nothing(tmp_path):
    layout = Layout("mysite")
    backups = tmp_path / "backups"
    backups.mkdir()
    script = shell.script(release_commands.backup(layout, Client("mysite"), "n").replace(layout.backups, str(backups)))
    out = run(script, tmp_path, {"runuser": "echo DUMP"})
    assert out.returncode == 0 and (backups / "n.dump").read_text() == "DUMP\n"
    assert stat.S_IMODE((backups / "n.dump").stat().st_mode) == 0o600
    assert shell.parse_reports(out.stdout) == {"backup": f"{backups}/n.dump"}
    failed = run(shell.script(release_commands.backup(layout, Client("mysite"), "m").replace(layout.backups, str(backups))),
                 tmp_path, {"runuser": "echo half; exit 3"})
    assert failed.returncode != 0 and sorted(os.listdir(backups)) == ["n.dump"]


def test_a_restore_reads_the_dump_as_its_input_as_the_app_user(tmp_path):
    layout = Layout("mysite")
    (tmp_path / "x.dump").write_text("DATA")
    script = commands.restore_database(layout, Client("mysite"), "x.dump").replace(layout.backups, str(tmp_path))
    out = run(shell.script(script), tmp_path, {"runuser": 'echo "$*"; cat'})
    assert out.returncode == 0
    assert "-u mysite --" in out.stdout and "--single-transaction" in out.stdout and "--clean" in out.stdout
    assert out.stdout.rstrip().endswith("DATA")


def test_a_long_dump_says_how_much_it_wrote_while_it_runs(tmp_path):
    layout = Layout("mysite")
    backups = tmp_path / "backups"
    backups.mkdir()
    script = shell.script(release_commands.backup(layout, Client("mysite"), "n").replace(layout.backups, str(backups)))
    # A dump that writes 3 MiB, one a second: the watcher sees the part file grow.
    out = run(script, tmp_path, {"runuser": "for i in 1 2 3; do head -c 1048576 /dev/zero; sleep 1; done"})
    said, rest = shell.progress_lines(out.stderr)
    assert out.returncode == 0 and (backups / "n.dump").stat().st_size == 3 * 1048576, out.stderr
    assert said and all(line.isdigit() for line in said) and int(said[-1]) > 0, out.stderr
    assert listing.dump_progress(said[-1]).endswith("MiB written so far")
    assert shell.REPORT not in rest and shell.PROGRESS not in rest
    # A dump that fails after a while still fails, with its own exit status, and leaves nothing.
    failed = run(shell.script(release_commands.backup(layout, Client("mysite"), "m").replace(layout.backups,
                                                                                           str(backups))),
                 tmp_path, {"runuser": "head -c 1000 /dev/zero; sleep 3; exit 4"})
    assert failed.returncode != 0 and shell.parse_reports(failed.stdout)["failed"] == "step 1"
    assert sorted(os.listdir(backups)) == ["n.dump"]


def test_a_long_restore_says_how_far_it_read_into_the_dump(tmp_path):
    layout = Layout("mysite")
    (tmp_path / "x.dump").write_bytes(b"x" * 4096)
    script = commands.restore_database(layout, Client("mysite"), "x.dump").replace(layout.backups, str(tmp_path))
    # pg_restore stands in: it reads half the dump, then takes its time with the rest.
    out = run(shell.script(script), tmp_path, {"runuser": "head -c 2048 >/dev/null; sleep 3; cat >/dev/null"})
    said, _ = shell.progress_lines(out.stderr)
    assert out.returncode == 0 and said, out.stderr
    assert "2048 4096" in said, said
    assert listing.restore_progress("2048 4096") == "2.0 KiB of the dump's 4.0 KiB restored (50 %)"


@pytest.mark.parametrize("said", ["", "x", "12", "12 0", "1 2 3", "$(reboot) 4", "-1 4"])
def test_a_restore_progress_line_that_is_not_two_sizes_says_nothing(said):
    assert listing.restore_progress(said) == ""


@pytest.mark.parametrize("said", ["", "x", "12 0", "-1", "$(reboot)"])
def test_a_dump_progress_line_that_is_not_a_size_says_nothing(said):
    assert listing.dump_progress(said) == ""


def test_the_session_shows_the_latest_progress_in_its_still_running_line():
    import io
    from tasks.session.run import Session
    from tasks.session.runner import Reporter
    from tasks.connection.remote import Result

    class Remote:
        def run(self, script, progress=None):
            for line in ("1048576", "3145728"):
                progress(line)
            import time
            time.sleep(0.3)
            return Result('@gangway {"backup": "x"}\n', "", 0)

    out = io.StringIO()
    reporter = Reporter(out, terminal=False)
    reporter.every = 0.1
    session = Session(inventory=None, host=None, remote=Remote(), reporter=reporter)
    ok, report, _ = session.run(("backup", "true"), progress=listing.dump_progress)
    assert ok and report == {"backup": "x"}
    assert "backup: 3.0 MiB written so far (" in out.getvalue(), out.getvalue()


# --- confirmation -----------------------------------------------------------------------------------------------

class _Terminal:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty, typed, refused", [(False, None, "add --yes"), (True, "y", "not confirmed"),
                                                  (True, "mysite", None)])
def test_a_restore_goes_on_only_when_the_app_name_is_typed(monkeypatch, tty, typed, refused):
    monkeypatch.setattr(tasks_backups.sys, "stdin", _Terminal(tty))
    monkeypatch.setattr(tasks_backups.sys, "stdout", _Terminal(tty))
    monkeypatch.setattr("builtins.input", lambda prompt: typed)
    inventory = Inventory(App("mysite"), (Host("192.0.2.1"),))
    if refused:
        with pytest.raises(DeployError, match=refused):
            tasks_backups.confirm(inventory, "x.dump")
    else:
        tasks_backups.confirm(inventory, "x.dump")


# --- schema after a restore -------------------------------------------------------------------------------------

def test_a_restored_schema_that_matches_says_nothing():
    assert schema_difference(["a.0001", "a.0002"], ["a.0001", "a.0002"]) == ""


def test_a_restored_schema_behind_the_code_says_to_migrate_and_ahead_says_to_deploy():
    behind = schema_difference(["a.0001"], ["a.0001", "a.0002"])
    assert "lacks 1 migration(s)" in behind and "a.0002" in behind and "fab manage -- migrate" in behind
    ahead = schema_difference(["a.0001", "a.0002", "b.0001"], ["a.0001", "a.0002"])
    assert "b.0001" in ahead and "newer code" in ahead and "fab deploy" in ahead
    assert "showmigrations" in schema_difference(None, ["a.0001"])


# --- Ctrl-C during a restore ----------------------------------------------------------------------------------

class _Restoring:
    """A session for restore_on: the steps it runs are answered in order, Ctrl-C comes at `interrupt_at`, and
    the maintenance flag reads back as `flag`."""
    layout, app, host, database = LAYOUT, "mysite", Host("192.0.2.1"), Client("mysite")
    inventory = Inventory(App("mysite"), (Host("192.0.2.1"),))

    def __init__(self, interrupt_at: str, flag: bool):
        self.interrupt_at, self.flag, self.ran = interrupt_at, flag, []
        self.reporter = type("Quiet", (), {"line": lambda *a: None, "step": lambda *a: None})()

    def state(self):
        return type("State", (), {"maintenance": False, "releases": {}, "live": None})()

    def run(self, *steps, progress=None):
        names = [name for name, _ in steps]
        self.ran.append(names)
        if names[0] == self.interrupt_at:
            raise KeyboardInterrupt
        if names == ["backup"]:
            return True, {"backup": "/srv/mysite/backups/x-before-restore.dump"}, ""
        return True, {"maintenance": self.flag} if "readback" in names else {}, ""


def _interrupted_at(step: str, flag: bool) -> tuple[str, list]:
    session = _Restoring(step, flag)
    job = tasks_backups.Task("restore", interrupted=tasks_backups.RESTORE_INTERRUPTED)
    with pytest.raises(KeyboardInterrupt):
        tasks_backups.restore_on(session, "20261205T080000Z-manual.dump", None, job)
    return job.interrupted, session.ran


def test_ctrl_c_during_the_backup_before_a_restore_says_that_backup_may_still_finish():
    said, ran = _interrupted_at("backup", flag=False)
    assert said.startswith("nothing was restored and this restore did not turn maintenance mode on (read back "
                           "from the server: off)."), said
    taking = re.search(r"The backup it was taking first \((\S+-before-restore\.dump)\) may still finish on the "
                       r"server: `fab backups` lists it once it is complete\.", said)
    assert taking, said
    assert ["maintenance"] not in ran  # it never turned maintenance mode on


def test_ctrl_c_while_pg_restore_runs_says_maintenance_stays_on_and_how_to_end_it():
    said, _ = _interrupted_at("restore", flag=True)
    assert "may be half-way" in said and "Maintenance mode stays on (read back from the server: on)" in said
    assert "`fab maintenance off`" in said and "The backup taken just before is " in said
    assert "may still finish" not in said  # that backup was complete


# --- provisioning ----------------------------------------------------------------------------------------------

def server(**backups) -> Server:
    inventory = Inventory(App("mysite"), (Host("192.0.2.1"),), backups=Backups(**backups))
    return Server(inventory, Host("192.0.2.1"), (), lambda: None)


def test_the_timer_runs_daily_at_the_inventory_time_persistently_with_a_random_delay():
    timer = provisioning.timer_file(server(time="04:30"))
    assert "OnCalendar=*-*-* 04:30:00" in timer and "Persistent=true" in timer and "RandomizedDelaySec=" in timer
    service = provisioning.service_file(server(keep_daily=3, keep_weekly=0))
    assert 'ExecStart=/usr/bin/python3 "/etc/gangway/mysite/backup.py" "/etc/gangway/mysite/backup-command.json" "/srv/mysite/backups" 3 0' in service
    assert "Requires=postgresql.service" in service
    assert "Type=oneshot" in service


def test_the_step_installs_the_script_root_only_and_enables_the_timer():
    step = provisioning.schedule(server())
    paths = {op.path: op for op in step.operations if hasattr(op, "path")}
    assert paths[LAYOUT.backup_script].mode == "700" and paths[LAYOUT.backup_script].owner == "root"
    assert {"/etc/systemd/system/mysite-backup.service", "/etc/systemd/system/mysite-backup.timer"} <= set(paths)
    assert "systemctl enable --quiet mysite-backup.timer" in step.after
    for probe in step.probes():
        assert_shellcheck_clean(probe.command)


def test_an_enabled_and_active_timer_with_the_same_files_is_left_alone():
    step = provisioning.schedule(server())
    probe = provisioning.timer_probe("mysite-backup.timer")
    assert probe.parse("enabled\nactive\n", 0) is True and probe.parse("disabled\ninactive\n", 3) is False
    assert Path(TEMPLATES / "backups" / "backup.py").read_text().startswith("#!/usr/bin/python3")
    assert step.title == "scheduled backups"


def test_the_shipped_backup_program_names_dumps_with_the_same_stamp():
    """templates/backups/backup.py runs on the server alone and cannot import tasks.timestamps."""
    program = (TEMPLATES / "backups" / "backup.py").read_text()
    assert f'STAMP = "{timestamps.STAMP}"' in program and f'SUFFIX = "{listing.DAILY_SUFFIX}"' in program


def test_a_listing_that_failed_is_none_never_no_backups():
    assert listing.parse_listing("", 1) is None
    assert listing.parse_listing("", 0) == []


def test_the_deploy_s_backup_probe_tells_none_from_unreadable(tmp_path):
    @dataclass(frozen=True)
    class Here(Layout):
        @property
        def backups(self) -> str:
            return str(tmp_path / "backups")

    probe = next(p for p in release_commands.state_probes(Here("mysite"), Client("mysite")) if p.key == "backups")
    assert_shellcheck_clean(probe.command)

    def answer(stubs=None):
        out = run(probe.command, tmp_path, stubs)
        return probe.parse(out.stdout, out.returncode)

    assert answer() is None  # no directory to list
    (tmp_path / "backups").mkdir()
    assert answer() == []
    (tmp_path / "backups" / "20260101T000000Z-manual.dump").write_bytes(b"x" * 10)
    (found,) = answer()
    assert (found.name, found.size) == ("20260101T000000Z-manual.dump", 10)
    assert answer({"find": "exit 1"}) is None  # find failing is not hidden behind sort
    assert releases.backups_to_prune(None, 0) == []  # what could not be listed is not pruned
