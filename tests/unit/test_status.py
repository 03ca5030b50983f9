"""`fab status` without a server: its probes pass shellcheck and keep hostile values inert, their output is
read right, and the rules that decide what needs attention say WARN or FAIL exactly when they should."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tasks import defaults
from tasks.cli import status
from tasks.inventory import Acme, App, Host, Inventory
from tasks.commands.release import LOW_SPACE_KIB, state_probes
from tasks.facts import backups as listing
from tasks.facts.backups import BackupFile
from tasks.facts.releases import GOOD, Release, ServerState
from tasks.cli.status import FAIL, OK, WARN, Health, Timer
from tasks.commands.database import Client
from tests.unit.shellcheck import assert_shellcheck_clean
from tests.unit.test_release_commands import HOSTILE, LAYOUT, run

NOW = 1_800_000_000
DAY = 86400
LIVE = "20261127T100000Z-abcdef1"
OLD = "20261126T100000Z-1234567"


def test_every_status_probe_passes_shellcheck():
    for https in (True, False):
        for probe in status.status_probes(LAYOUT, Client("mysite"), "app.example.com", "/healthz/", https):
            assert_shellcheck_clean(probe.command)


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_name_or_path_reaches_curl_as_one_argument(tmp_path, value):
    for https in (True, False):
        out = run(status.health_command(value, "/" + value, https), tmp_path,
                  {"curl": 'printf "%s\\0" "$@" > args; printf 200'})
        assert out.returncode == 0 and not (tmp_path / "CANARY").exists()
        args = (tmp_path / "args").read_text().split("\0")
        assert args[-2] == f"{'https' if https else 'http'}://{value}/{value}"
        assert out.stdout.split() == ["yes", "0", "200"]


def test_an_untrusted_certificate_is_asked_again_without_verifying_and_said(tmp_path):
    stub = 'for a in "$@"; do [ "$a" = --insecure ] && { printf 200; exit 0; }; done; printf 000; exit 60'
    out = run(status.health_command("app.example.com", "/", True), tmp_path, {"curl": stub})
    assert status.parse_health(out.stdout) == Health("200", 60, False)


def test_the_health_request_goes_through_nginx_on_the_server_by_the_site_s_name():
    command = status.health_command("app.example.com", "/healthz/", True)
    assert "--resolve app.example.com:443:127.0.0.1 " in command and " https://app.example.com/healthz/)" in command
    assert command.count("%header{x-gangway-release}") == 2  # which release answered, both times
    assert command.count("--insecure") == 1  # only the second request, after a certificate that did not verify


# --- reading what the server says -------------------------------------------------------------------------------

def test_units_timers_disk_memory_and_backups_are_read():
    units = status.parse_units("nginx.service loaded active running A high performance web server\n"
                               "mysite@X.service loaded failed failed Gunicorn for mysite, release X\n")
    assert units == {"nginx.service": "active/running", "mysite@X.service": "failed/failed"}
    disk = ("Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sda1 100 91 9 91% /\n"
            "/dev/sda1 100 91 9 91% /\n")
    assert status.parse_disk(disk, 0) == [status.Disk("/", 91, 9)]
    assert status.parse_meminfo("MemTotal:  2048000 kB\nMemAvailable: 1024000 kB\n") == {
        "MemTotal": 2048000, "MemAvailable": 1024000}
    newest = next(p for p in status.status_probes(LAYOUT, Client("a"), "a", "/", True) if p.key == "newest_backup")
    assert newest.parse("20261127T020000Z-daily.dump\t1048576\t1799999000.5\t1800000000\n"
                        "x.media.tar.gz\t10\t1799999999\t1800000000\nold.dump\t5\t1700000000\t1800000000\n", 0
                        ) == ("20261127T020000Z-daily.dump", 1048576, 1000)
    assert newest.parse("", 0) is None and isinstance(newest.parse("", 1), status.Unreadable)
    assert status.parse_health("garbage") is None


# --- timers, from real `status.timers_command` output ----------------------------------------------------------
# Captured on Debian 12 (systemd 252) and Debian 13 (systemd 257) test servers with three Persistent=true timers:
# gw-never (never ran), gw-ran (its service ran, /bin/true), gw-bad (its service failed, /bin/false).
# "after a restart": the timers stopped, their services unloaded and the timers started again, which is what a
# reboot does to them: LastTriggerUSec comes back from the stamp file systemd created when each timer first
# started (also for gw-never), with LastTriggerUSecMonotonic=0, and every service says Result=success.

AFTER_RESTART_252 = """\
@timer gw-bad.timer
Unit=gw-bad.service
NextElapseUSecRealtime=Sun 2026-12-06 00:00:00 UTC
LastTriggerUSec=Sat 2026-12-05 03:18:25 UTC
LastTriggerUSecMonotonic=0
ActiveState=active
LastTriggerUSec.unix=1796440705
NextElapseUSecRealtime.unix=1796515200
@service
Result=success
ExecMainStartTimestamp=
ExecMainExitTimestamp=
ExecMainStatus=0
ActiveState=inactive
InvocationID=
@journal
__REALTIME_TIMESTAMP=1796440705828456
JOB_RESULT=failed
@timer gw-never.timer
Unit=gw-never.service
NextElapseUSecRealtime=Sun 2026-12-06 00:00:00 UTC
LastTriggerUSec=Sat 2026-12-05 03:18:25 UTC
LastTriggerUSecMonotonic=0
ActiveState=active
LastTriggerUSec.unix=1796440705
NextElapseUSecRealtime.unix=1796515200
@service
Result=success
ExecMainStartTimestamp=
ExecMainExitTimestamp=
ExecMainStatus=0
ActiveState=inactive
InvocationID=
@journal
@timer gw-ran.timer
Unit=gw-ran.service
NextElapseUSecRealtime=Sun 2026-12-06 00:00:00 UTC
LastTriggerUSec=Sat 2026-12-05 03:18:25 UTC
LastTriggerUSecMonotonic=0
ActiveState=active
LastTriggerUSec.unix=1796440705
NextElapseUSecRealtime.unix=1796515200
@service
Result=success
ExecMainStartTimestamp=
ExecMainExitTimestamp=
ExecMainStatus=0
ActiveState=inactive
InvocationID=
@journal
__REALTIME_TIMESTAMP=1796440705813437
JOB_RESULT=done
"""

RAN_THIS_BOOT_252 = """\
@timer gw-bad.timer
Unit=gw-bad.service
NextElapseUSecRealtime=Sun 2026-12-06 00:00:00 UTC
LastTriggerUSec=Sat 2026-12-05 03:18:25 UTC
LastTriggerUSecMonotonic=0
ActiveState=active
LastTriggerUSec.unix=1796440705
NextElapseUSecRealtime.unix=1796515200
@service
Result=exit-code
ExecMainStartTimestamp=@1796440763
ExecMainExitTimestamp=@1796440763
ExecMainStatus=1
ActiveState=failed
InvocationID=8b0e1e3045844d6998555e76c1117217
@timer gw-never.timer
Unit=gw-never.service
NextElapseUSecRealtime=Sun 2026-12-06 00:00:00 UTC
LastTriggerUSec=Sat 2026-12-05 03:18:25 UTC
LastTriggerUSecMonotonic=0
ActiveState=active
LastTriggerUSec.unix=1796440705
NextElapseUSecRealtime.unix=1796515200
@service
Result=success
ExecMainStartTimestamp=
ExecMainExitTimestamp=
ExecMainStatus=0
ActiveState=inactive
InvocationID=
@journal
@timer gw-ran.timer
Unit=gw-ran.service
NextElapseUSecRealtime=Sun 2026-12-06 00:00:00 UTC
LastTriggerUSec=Sat 2026-12-05 03:18:25 UTC
LastTriggerUSecMonotonic=0
ActiveState=active
LastTriggerUSec.unix=1796440705
NextElapseUSecRealtime.unix=1796515200
@service
Result=success
ExecMainStartTimestamp=@1796440763
ExecMainExitTimestamp=@1796440763
ExecMainStatus=0
ActiveState=inactive
InvocationID=0fde08b5b7fc4f3989ad142054b84556
"""

FIRED_252 = """\
@timer gw-fired.timer
Unit=gw-fired.service
NextElapseUSecRealtime=
LastTriggerUSec=Sat 2026-12-05 03:19:36 UTC
LastTriggerUSecMonotonic=12h 45min 49.248573s
ActiveState=active
LastTriggerUSec.unix=1796440776
NextElapseUSecRealtime.unix=
@service
Result=success
ExecMainStartTimestamp=@1796440776
ExecMainExitTimestamp=@1796440776
ExecMainStatus=0
ActiveState=inactive
InvocationID=9f424c9977b9483e973f017a925011a1
"""  # OnActiveSec=1: triggered by the timer itself

AFTER_RESTART_257 = """\
@timer gw-bad.timer
Unit=gw-bad.service
NextElapseUSecRealtime=Sun 2026-12-06 00:00:00 UTC
LastTriggerUSec=Sat 2026-12-05 03:18:26 UTC
LastTriggerUSecMonotonic=0
ActiveState=active
LastTriggerUSec.unix=1796440706
NextElapseUSecRealtime.unix=1796515200
@service
Result=success
ExecMainStartTimestamp=
ExecMainExitTimestamp=
ExecMainStatus=0
ActiveState=inactive
InvocationID=
@journal
__REALTIME_TIMESTAMP=1796440706576575
JOB_RESULT=failed
@timer gw-never.timer
Unit=gw-never.service
NextElapseUSecRealtime=Sun 2026-12-06 00:00:00 UTC
LastTriggerUSec=Sat 2026-12-05 03:18:26 UTC
LastTriggerUSecMonotonic=0
ActiveState=active
LastTriggerUSec.unix=1796440706
NextElapseUSecRealtime.unix=1796515200
@service
Result=success
ExecMainStartTimestamp=
ExecMainExitTimestamp=
ExecMainStatus=0
ActiveState=inactive
InvocationID=
@journal
@timer gw-ran.timer
Unit=gw-ran.service
NextElapseUSecRealtime=Sun 2026-12-06 00:00:00 UTC
LastTriggerUSec=Sat 2026-12-05 03:18:26 UTC
LastTriggerUSecMonotonic=0
ActiveState=active
LastTriggerUSec.unix=1796440706
NextElapseUSecRealtime.unix=1796515200
@service
Result=success
ExecMainStartTimestamp=
ExecMainExitTimestamp=
ExecMainStatus=0
ActiveState=inactive
InvocationID=
@journal
__REALTIME_TIMESTAMP=1796440706517082
JOB_RESULT=done
"""

RAN_THIS_BOOT_257 = """\
@timer gw-bad.timer
Unit=gw-bad.service
NextElapseUSecRealtime=Sun 2026-12-06 00:00:00 UTC
LastTriggerUSec=Sat 2026-12-05 03:18:26 UTC
LastTriggerUSecMonotonic=0
ActiveState=active
LastTriggerUSec.unix=1796440706
NextElapseUSecRealtime.unix=1796515200
@service
Result=exit-code
ExecMainStartTimestamp=@1796440763
ExecMainExitTimestamp=@1796440763
ExecMainStatus=1
ActiveState=failed
InvocationID=45286dc9075b4e9894a50c6a2ad8bed6
@timer gw-never.timer
Unit=gw-never.service
NextElapseUSecRealtime=Sun 2026-12-06 00:00:00 UTC
LastTriggerUSec=Sat 2026-12-05 03:18:26 UTC
LastTriggerUSecMonotonic=0
ActiveState=active
LastTriggerUSec.unix=1796440706
NextElapseUSecRealtime.unix=1796515200
@service
Result=success
ExecMainStartTimestamp=
ExecMainExitTimestamp=
ExecMainStatus=0
ActiveState=inactive
InvocationID=
@journal
@timer gw-ran.timer
Unit=gw-ran.service
NextElapseUSecRealtime=Sun 2026-12-06 00:00:00 UTC
LastTriggerUSec=Sat 2026-12-05 03:18:26 UTC
LastTriggerUSecMonotonic=0
ActiveState=active
LastTriggerUSec.unix=1796440706
NextElapseUSecRealtime.unix=1796515200
@service
Result=success
ExecMainStartTimestamp=@1796440763
ExecMainExitTimestamp=@1796440763
ExecMainStatus=0
ActiveState=inactive
InvocationID=173c5eb13301465e9305c25011b6c2e9
"""

FIRED_257 = """\
@timer gw-fired.timer
Unit=gw-fired.service
NextElapseUSecRealtime=
LastTriggerUSec=Sat 2026-12-05 03:19:37 UTC
LastTriggerUSecMonotonic=12h 45min 49.473575s
ActiveState=active
LastTriggerUSec.unix=1796440777
NextElapseUSecRealtime.unix=
@service
Result=success
ExecMainStartTimestamp=@1796440777
ExecMainExitTimestamp=@1796440777
ExecMainStatus=0
ActiveState=inactive
InvocationID=345c3e08719547d992384db6e4c03968
"""  # OnActiveSec=1: triggered by the timer itself


def _by_unit(out: str) -> dict[str, Timer]:
    return {t.unit: t for t in status.parse_timers(out)}


@pytest.mark.parametrize("out", [AFTER_RESTART_252, AFTER_RESTART_257], ids=["systemd-252", "systemd-257"])
def test_after_a_reboot_a_timer_that_never_ran_has_not_run_whatever_its_stamp_says(out):
    timers = _by_unit(out)
    never = timers["gw-never.timer"]
    assert never.last is None and never.result == "" and never.next == 1796515200
    assert status.timer_check(never, 1796441000) == status.Check(OK, "gw-never.timer",
                                                                  "has not run yet, next in 20 h")
    # Runs before the restart are known from the journal: when, and whether they failed.
    ran, bad = timers["gw-ran.timer"], timers["gw-bad.timer"]
    assert (ran.last, ran.result) == (int(out.split("__REALTIME_TIMESTAMP=")[2][:10]), "success")
    assert bad.result == "failed" and bad.last is not None
    assert status.timer_check(bad, 1796441000).level == WARN
    assert status.timer_check(ran, 1796441000).level == OK


@pytest.mark.parametrize("out", [RAN_THIS_BOOT_252, RAN_THIS_BOOT_257], ids=["systemd-252", "systemd-257"])
def test_a_run_in_this_boot_is_read_from_the_service_with_its_result_and_exit_status(out):
    timers = _by_unit(out)
    bad, ran = timers["gw-bad.timer"], timers["gw-ran.timer"]
    assert (bad.result, bad.status, bad.running) == ("exit-code", 1, False)
    assert (ran.result, ran.status) == ("success", 0)
    assert ran.last and ran.last > 1796440000
    check = status.timer_check(bad, bad.last + 600)
    assert check.level == WARN and check.detail.startswith("last ran 10 min ago (exit-code, exit status 1)")
    assert "journalctl -u gw-bad.service" in check.detail
    assert status.timer_check(ran, ran.last + 600).detail.startswith("last ran 10 min ago (success), next in ")
    assert timers["gw-never.timer"].last is None


@pytest.mark.parametrize("out", [FIRED_252, FIRED_257], ids=["systemd-252", "systemd-257"])
def test_a_timer_that_fired_in_this_boot_shows_its_service_s_run(out):
    fired = _by_unit(out)["gw-fired.timer"]
    assert fired.result == "success" and fired.last == int(out.split("ExecMainStartTimestamp=@")[1][:10])
    assert fired.next is None  # a monotonic timer has no calendar time for its next run


def test_a_timer_whose_service_is_running_says_so_and_does_not_report_a_result():
    out = ("@timer mysite-backup.timer\nUnit=mysite-backup.service\nActiveState=active\n"
           "NextElapseUSecRealtime.unix=1800000600\n@service\nInvocationID=abc\nActiveState=activating\n"
           "Result=success\nExecMainStatus=0\nExecMainStartTimestamp=@1799999880\n")
    timer = status.parse_timers(out)[0]
    assert timer.running and timer.result == ""
    assert status.timer_check(timer, NOW) == status.Check(OK, "mysite-backup.timer",
                                                          "running now (since 2 min), next in 10 min")


def test_the_timers_probe_asks_systemd_for_its_own_properties():
    command = status.timers_command("systemctl list-units --plain --no-legend 'x-*.timer'")
    for name in ("LastTriggerUSec", "LastTriggerUSecMonotonic", "NextElapseUSecRealtime", "InvocationID",
                 "ExecMainStatus", "ExecMainStartTimestamp", "--timestamp=unix", "JOB_RESULT=failed"):
        assert name in command
    assert "stat " not in command and "/var/lib/systemd/timers" not in command  # no stamp file's mtime


# --- what needs attention ---------------------------------------------------------------------------------------

def test_the_certificate_warns_under_the_threshold_and_fails_once_expired():
    days = defaults.STATUS_CERT_DAYS
    assert status.certificate_check(NOW + (days + 1) * DAY, NOW, True, days).level == OK
    assert status.certificate_check(NOW + (days - 1) * DAY, NOW, True, days).level == WARN
    assert status.certificate_check(NOW - 1, NOW, True, days).level == FAIL
    assert status.certificate_check(None, NOW, True, days).level == FAIL
    assert status.certificate_check(None, NOW, False, days) is None  # no domains: no TLS to check


GIB = 1048576  # KiB


def test_a_nearly_full_disk_or_memory_warns():
    assert status.disk_check([status.Disk("/", 90, 2 * GIB)], 90).level == OK
    assert status.disk_check([status.Disk("/", 60, 8 * GIB), status.Disk("/srv", 91, 2 * GIB)], 90).level == WARN
    assert status.memory_check({"MemTotal": 1000, "MemAvailable": 50}, 90).level == WARN
    assert status.memory_check({"MemTotal": 1000, "MemAvailable": 500}, 90).level == OK


def test_a_full_disk_fails_with_the_free_space_and_the_fix():
    df = ("Filesystem 1024-blocks Used Available Capacity Mounted on\n"
          "/dev/sda1 10255636 10239252 0 100% /\n/dev/sda1 10255636 10239252 0 100% /\n")
    check = status.disk_check(status.parse_disk(df, 0), 90, backups="/srv/mysite/backups/")
    assert check.level == FAIL
    assert "/ 100 % used, 0 MiB free" in check.detail and "/ is full" in check.detail
    for fix in ("/srv/mysite/backups/", "apt-get clean", "journalctl --vacuum-size"):
        assert fix in check.detail


def test_too_little_room_for_the_next_release_fails_before_the_disk_is_full():
    need = status.release_need_kib(200 * 1024)  # the live release takes 200 MiB unpacked
    assert need == 200 * 1024 + LOW_SPACE_KIB
    short = status.disk_check([status.Disk("/", 97, 150 * 1024)], 90, need)
    assert short.level == FAIL and "150 MiB free" in short.detail and f"about {need // 1024} MiB" in short.detail
    assert status.disk_check([status.Disk("/", 97, need + 1)], 90, need).level == WARN
    # No release yet: the spare a deploy keeps is the floor.
    assert status.disk_check([status.Disk("/", 99, LOW_SPACE_KIB - 1)], 90,
                             status.release_need_kib(None)).level == FAIL
    # Only the file system the app lives on is held to a release's size.
    assert status.disk_check([status.Disk("/", 50, 100), status.Disk("/srv", 50, 5 * GIB)], 90, need).level == OK


def test_the_status_probes_measure_the_live_release(tmp_path):
    probe = next(p for p in status.status_probes(LAYOUT, Client("a"), "a", "/", True) if p.key == "release_kib")
    assert probe.parse("2048\t/srv/mysite/releases/X\n", 0) == 2048
    assert probe.parse("", 1) is None


def test_an_old_backup_warns_only_when_backups_are_scheduled():
    old = BackupFile("x-daily.dump", 1024, 3 * DAY)
    assert status.backup_check(old, True, 2).level == WARN
    assert status.backup_check(old, False, 2).level == OK
    assert status.backup_check(BackupFile("x.dump", 1024, DAY), True, 2).level == OK
    assert status.backup_check(None, True, 2).level == WARN
    assert status.backup_check(None, False, 2).level == OK


def test_the_live_instance_down_fails_naming_it_and_a_failed_old_one_warns():
    units = {f"mysite@{LIVE}.service": "inactive/dead"}
    check = status.gunicorn_check("mysite", LIVE, units)
    assert check.level == FAIL and f"mysite@{LIVE}.service" in check.detail
    units = {f"mysite@{LIVE}.service": "active/running", f"mysite@{OLD}.service": "failed/failed"}
    assert status.gunicorn_check("mysite", LIVE, units).level == WARN
    assert status.gunicorn_check("mysite", None, {}).level == OK


def test_health_says_what_was_checked():
    ok = status.health_check(Health("200", 0, True), "app.example.com", "/h", True, False, False)
    assert ok.level == OK and "verified against the server's CA store" in ok.detail
    private = status.health_check(Health("200", 60, False), "app.example.com", "/h", True, True, False)
    assert private.level == OK and "NOT verified" in private.detail
    assert status.health_check(Health("200", 60, False), "a", "/h", True, False, False).level == FAIL
    assert status.health_check(Health("502", 0, True), "a", "/h", True, False, False).level == FAIL
    assert status.health_check(Health("503", 0, True), "a", "/h", True, False, True).level == WARN
    assert status.health_check(Health("000", 7, True), "a", "/h", True, False, False).level == FAIL
    assert status.health_check(None, "a", "/h", True, False, False).level == FAIL



def test_the_health_answer_names_the_release_socket_nginx_says_answered(tmp_path):
    stub = f"printf '200 {LAYOUT.socket(LIVE)}'"
    out = run(status.health_command("app.example.com", "/", True), tmp_path, {"curl": stub})
    assert status.parse_health(out.stdout) == Health("200", 0, True, LAYOUT.socket(LIVE))
    assert status.parse_health("yes 0 200") == Health("200", 0, True, "")


def test_a_200_from_the_placeholder_page_is_not_health_when_a_release_is_live():
    """djangogirls: every URL served the placeholder page, with a 200, and status said "all well"."""
    placeholder = status.health_check(Health("200", 0, True), "app.example.com", "/h", True, False, False, LIVE,
                                      LAYOUT)
    assert placeholder.level == FAIL
    assert placeholder.detail == (
        "GET https://app.example.com/h through nginx on the server -> 200, but from no release: nginx serves the "
        f"placeholder page (or a config that does not proxy to the live link), not {LIVE}: run `fab deploy` (it "
        "repairs nginx), or `sudo nginx -t && sudo systemctl reload nginx` on the server")
    older = status.health_check(Health("200", 0, True, LAYOUT.socket(OLD)), "a", "/h", True, False, False, LIVE,
                                LAYOUT)
    assert older.level == FAIL and f"-> 200, but from {OLD}, not the live release {LIVE}" in older.detail
    live = status.health_check(Health("200", 0, True, LAYOUT.socket(LIVE)), "a", "/h", True, False, False, LIVE,
                               LAYOUT)
    assert live.level == OK and f"-> 200, from {LIVE}; certificate verified" in live.detail
    # Before any deploy, the placeholder page is what the site should show.
    assert status.health_check(Health("200", 0, True), "a", "/h", True, False, False, None, LAYOUT).level == OK

def test_a_timer_that_failed_or_is_off_warns():
    assert status.timer_check(Timer("mysite-job-x.timer", "active", NOW - 60, NOW + 60, "success"), NOW).level == OK
    assert status.timer_check(Timer("mysite-job-x.timer", "active", None, NOW + 60, ""), NOW).level == OK
    failed = status.timer_check(Timer("mysite-job-x.timer", "active", NOW - 60, NOW + 60, "exit-code"), NOW)
    assert failed.level == WARN and "mysite-job-x.service" in failed.detail
    assert status.timer_check(Timer("mysite-job-x.timer", "inactive", None, None, ""), NOW).level == WARN


def test_updates_reboot_and_maintenance():
    apt = [Timer("apt-daily-upgrade.timer", "active", None, NOW + 60, "")]
    running = {"unattended-upgrades.service": "active/running"}
    assert status.updates_check((3, 2), True, running, apt).level == OK
    assert status.updates_check((3, 2), False, running, apt).level == WARN
    assert status.updates_check((3, 2), True, {}, apt).level == WARN
    assert status.updates_check(None, True, running, apt).level == WARN
    assert status.reboot_check(None).level == OK
    assert "linux-image-amd64" in status.reboot_check(["linux-image-amd64"]).detail
    assert status.maintenance_check(True).level == WARN and status.maintenance_check(False).level == OK


def _inventory(domains=("app.example.com",)) -> Inventory:
    return Inventory(App("mysite", domains=domains, health_check="/healthz/"),
                     (Host("203.0.113.10"),), acme=Acme(email="ops@example.com"))


def _facts(**changes) -> dict:
    facts = {"now": NOW,
             "units": {f"mysite@{LIVE}.service": "active/running", "nginx.service": "active/running",
                       "postgresql.service": "active/exited", "postgresql@17-main.service": "active/running",
                       "unattended-upgrades.service": "active/running"},
             "timers": [Timer("certbot.timer", "active", None, NOW + DAY, ""),
                        Timer("apt-daily-upgrade.timer", "active", None, NOW + DAY, "")],
             "health": Health("200", 0, True, LAYOUT.socket(LIVE)), "certificate": NOW + 60 * DAY,
             "disk": [status.Disk("/", 40, 8 << 20)],
             "memory": {"MemTotal": 2000000, "MemAvailable": 1500000}, "newest_backup": None, "updates": (0, 0),
             "unattended": True, "reboot": None, "maintenance": False,
             "database:reach": {"ok": True, "said": "mysite@mysite"}}
    return {**facts, **changes}


STATE = ServerState({LIVE: Release(LIVE, GOOD, commit="abcdef1" * 5, created="2026-11-27T10:00:00Z"),
                     OLD: Release(OLD, GOOD, commit="1234567" * 5)},
                    [], LIVE, [LIVE], [{"event": "live", "release": OLD}, {"event": "live", "release": LIVE}], [])


def test_a_healthy_server_is_all_ok_and_exits_zero():
    found = status.checks(_inventory(), "app.example.com", STATE, _facts())
    assert [c.level for c in found] == [OK] * len(found) and status.exit_code(found) == 0
    names = [c.name for c in found]
    assert names[:6] == ["release", "gunicorn", "nginx", "postgresql", "database", "health"] and "certbot.timer" in names
    release = found[0].detail
    assert LIVE in release and "commit abcdef1" in release and OLD in release
    assert "apt-daily-upgrade.timer" not in names  # shown through the updates line


def test_every_app_timer_shows_but_a_deploy_s_standby_timer():
    timers = _facts()["timers"] + [Timer("mysite-job-clearsessions.timer", "active", NOW - 60, NOW + 60, "success"),
                                   Timer(f"mysite-standby-{OLD}.timer", "active", None, NOW + 60, "")]
    names = [c.name for c in status.checks(_inventory(), "app.example.com", STATE, _facts(timers=timers))]
    assert "mysite-job-clearsessions.timer" in names and f"mysite-standby-{OLD}.timer" not in names


def test_the_app_down_exits_two_and_a_warning_exits_one():
    down = _facts(units={**_facts()["units"], f"mysite@{LIVE}.service": "inactive/dead"},
                  health=Health("502", 0, True))
    assert status.exit_code(status.checks(_inventory(), "app.example.com", STATE, down)) == 2
    assert status.exit_code(status.checks(_inventory(), "app.example.com", STATE, _facts(reboot=[]))) == 1


def test_backups_count_as_scheduled_when_the_backup_timer_exists():
    timers = _facts()["timers"] + [Timer("mysite-backup.timer", "active", NOW - DAY, NOW + 60, "success")]
    found = status.checks(_inventory(), "app.example.com", STATE,
                          _facts(timers=timers, newest_backup=BackupFile("old-daily.dump", 10, 3 * DAY)))
    assert {c.name: c.level for c in found}["backups"] == WARN


def test_without_domains_there_is_no_certificate_or_certbot_line():
    found = status.checks(_inventory(domains=()), "203.0.113.10", STATE,
                          _facts(timers=[], certificate=None))
    names = [c.name for c in found]
    assert "certificate" not in names and "certbot.timer" not in names
    assert status.exit_code([c for c in found if c.name != "updates"]) == 0


def test_a_missing_certbot_timer_fails_when_the_site_has_tls():
    found = status.checks(_inventory(), "app.example.com", STATE, _facts(timers=_facts()["timers"][1:]))
    assert {c.name: c.level for c in found}["certbot.timer"] == FAIL


def test_no_live_release_warns():
    state = replace(STATE, live=None, releases={}, history=[])
    assert status.release_check(state, NOW).level == WARN


def test_the_status_gather_keys_do_not_collide_with_the_state_probes():
    keys = [p.key for p in state_probes(LAYOUT, Client("a"))] + [p.key for p in status.status_probes(LAYOUT, Client("a"), "a", "/", True)]
    assert len(keys) == len(set(keys))


def test_ages_read_like_a_person_says_them():
    assert [status.age(s) for s in (5, 600, 3 * 3600, 3 * DAY)] == ["5 s", "10 min", "3 h", "3 days"]


def test_only_the_real_rollback_target_is_called_warm_and_other_instances_are_named():
    units = {f"mysite@{r}.service": "active/running" for r in (LIVE, OLD, "stray")}
    check = status.gunicorn_check("mysite", LIVE, units, target=OLD)
    assert check.level == OK
    assert f"mysite@{OLD}.service (the rollback target, warm for an instant rollback)" in check.detail
    assert "not the rollback target: mysite@stray.service" in check.detail
    assert check.detail.count("warm") == 1
    cold = status.gunicorn_check("mysite", LIVE, {f"mysite@{LIVE}.service": "active/running",
                                                  "mysite@stray.service": "active/running"}, target=OLD)
    assert f"the rollback target {OLD} is not running" in cold.detail and "warm for" not in cold.detail


# --- what could not be read is said, never taken for "none" or 0 ---------------------------------------------------

def probe_of(key: str):
    return next(p for p in status.status_probes(LAYOUT, Client("a"), "a", "/", True) if p.key == key)


def answer(probe, tmp_path, stubs=None):
    out = run(probe.command, tmp_path, stubs)
    return probe.parse(out.stdout, out.returncode)


def test_the_newest_backup_probe_tells_none_from_unreadable(tmp_path):
    backups = tmp_path / "backups"
    command = listing.listing_command(LAYOUT).replace(LAYOUT.backups, str(backups))
    probe = status.Probe("newest_backup", command, status.parse_newest_backup)
    assert isinstance(answer(probe, tmp_path), status.Unreadable)  # no directory to list
    backups.mkdir()
    assert answer(probe, tmp_path) is None  # listed, and there is none
    (backups / "empty.dump").write_bytes(b"")
    assert answer(probe, tmp_path) is None  # an empty dump is not a backup
    (backups / "20261127T020000Z-daily.dump").write_bytes(b"x" * 10)
    newest = answer(probe, tmp_path)
    assert (newest.size, newest.name) == (10, "20261127T020000Z-daily.dump")
    # find failing (a directory it may not read) is not taken for "no backups".
    assert isinstance(answer(probe, tmp_path, {"find": "echo 'find: permission denied' >&2; exit 1"}),
                      status.Unreadable)
    assert probe_of("newest_backup").command == listing.listing_command(LAYOUT)
    assert isinstance(status.parse_newest_backup("", 2), status.Unreadable)


def test_an_unreadable_backup_directory_warns_and_is_never_none_yet():
    for scheduled in (True, False):
        check = status.backup_check(status.Unreadable("listing it exited with status 1"), scheduled, 2,
                                    "/srv/mysite/backups/")
        assert check.level == WARN and "none yet" not in check.detail
        assert check.detail == ("could not read /srv/mysite/backups/ (listing it exited with status 1), so whether "
                                "a recent backup exists is unknown: look with `sudo ls -l /srv/mysite/backups/` on "
                                "the server")


def test_a_df_that_failed_or_answered_in_part_is_unreadable_not_free(tmp_path):
    df = "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sda1 100 91 9 91% /\n"
    assert isinstance(status.parse_disk(df, 1), status.Unreadable)  # one path answered, the app's did not
    assert isinstance(status.parse_disk("", 0), status.Unreadable)
    assert isinstance(status.parse_disk(df + "/dev/sdb1 100 91 - 91% /srv\n", 0), status.Unreadable)
    real = run(f"df -Pk / {tmp_path / 'missing'}", tmp_path)
    assert isinstance(status.parse_disk(real.stdout, real.returncode), status.Unreadable)
    assert probe_of("disk").parse(df, 0) == [status.Disk("/", 91, 9)]


def test_an_unreadable_disk_warns_with_how_to_look():
    check = status.disk_check(status.Unreadable("df exited with status 1"), 90, asked="df -h / /srv/mysite")
    assert check.level == WARN and check.detail.startswith("could not read the free space (df exited with status 1)")
    assert "`df -h / /srv/mysite`" in check.detail and "free" in check.detail
    assert status.disk_check([], 90).level == WARN and "could not read" in status.disk_check([], 90).detail


def test_a_certificate_that_is_there_but_unreadable_is_not_called_missing(tmp_path):
    cert = tmp_path / "cert.pem"
    probe = status.Probe("certificate", status.certificate_command(str(cert)), status.parse_certificate)
    assert answer(probe, tmp_path) is None  # no file: none
    cert.write_text("not a certificate\n")
    broken = answer(probe, tmp_path)
    assert isinstance(broken, status.Unreadable)
    check = status.certificate_check(broken, NOW, True, 20, "/etc/letsencrypt/live/x/cert.pem")
    assert check.level == FAIL and check.detail.startswith("could not read /etc/letsencrypt/live/x/cert.pem")
    assert "none found" not in check.detail
    assert status.parse_certificate(f"{NOW}\n", 0) == NOW


def test_the_status_of_a_server_whose_backups_and_disk_could_not_be_read_says_so():
    found = status.checks(_inventory(), "app.example.com", STATE,
                          _facts(newest_backup=status.Unreadable("listing it exited with status 1"),
                                 disk=status.Unreadable("df exited with status 1")))
    by_name = {c.name: c for c in found}
    assert by_name["backups"].level == WARN and by_name["disk"].level == WARN
    assert "could not read /srv/mysite/backups/" in by_name["backups"].detail
    assert "could not read the free space" in by_name["disk"].detail and "/srv/mysite" in by_name["disk"].detail
    assert status.exit_code(found) == 1

