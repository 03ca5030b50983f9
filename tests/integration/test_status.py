"""`fab status` and `fab logs` on a real server: all well (exit 0) with the live release, the certificate's days
and a healthy answer through nginx; the live instance stopped turns it non-zero naming the unit, and a failed
scheduled job shows; the app's journal holds a request made from outside, --grep keeps only its lines,
--nginx shows nginx's access line for it, and --follow shows a new line as it comes, until Ctrl-C; a --lines
that is no number is one sentence naming it."""

from __future__ import annotations

import os
import re
import secrets
import select
import signal
import subprocess
import time
from shlex import quote

import pytest

from tests.integration.appsite import Site, deployed_id, make_site
from tests.integration.conftest import APP, REPO


def app_units(site: Site, pattern: str, state: str = "") -> list[str]:
    """The loaded units of the app named by PATTERN (mysite@*.service, mysite-*.timer), in STATE if given."""
    states = f" --state={state}" if state else ""
    out = site.root(f"systemctl list-units --all --plain --no-legend{states} {quote(pattern)}")
    return [line.split()[0] for line in out.splitlines() if line.split()]


def settle(site: Site) -> str:
    """Put the shared server into the state these tests expect, whatever modules ran on it before (they share
    it: test_backups turns maintenance on and changes the backup retention, test_jobs adds scheduled jobs,
    test_operate leaves variables of the app's own, a failed deploy leaves a failed instance): provisioned as
    the plain inventory says (no jobs, the default retention), no variables of the app's own, maintenance off,
    no failed unit of the app, this module's release live and healthy through nginx with at most its standby
    running beside it, and a recent backup. Returns the live release."""
    site.fab("maintenance", "off")
    site.fab("provision")  # jobs, backup timer and retention, nginx: as the plain inventory says
    names = re.findall(r"^  (\w+)$", site.fab("config").stdout, re.M)  # listed one a line, values hidden
    if names:
        site.fab("config", *(arg for name in names for arg in ("--unset", name)))
    deployed = site.deploy().stdout
    live = deployed_id(deployed)
    # Only the app's own units, by name: the live instance and the standby the deploy kept warm stay, any other
    # instance stops.
    warm = re.findall(r"; (\S+) kept warm for `fab rollback`", deployed)
    keep = {f"{APP}@{release}.service" for release in {live, *warm}}
    strays = [unit for unit in app_units(site, f"{APP}@*.service", "active,activating,reloading")
              if unit not in keep]
    if strays:
        site.root(f"systemctl stop {' '.join(map(quote, strays))}")
    failed = app_units(site, f"{APP}@*.service", "failed") + app_units(site, f"{APP}-*", "failed")
    if failed:
        site.root(f"systemctl reset-failed {' '.join(map(quote, sorted(set(failed))))}")
    if not site.root(f"find /srv/{APP}/backups -name '*.dump' -mtime -1").split():
        site.fab("backup")  # backups are scheduled: without a recent one, status warns
    assert site.get("/healthz/").status == 200
    assert site.answering().split()[1] == live
    assert site.root(f"readlink /srv/{APP}/current").strip().endswith(f"/{live}")
    return live


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory) -> Site:
    site = make_site(trixie, tmp_path_factory, "status")
    site.live = settle(site)
    return site


def _lines(out: subprocess.CompletedProcess) -> dict[str, str]:
    """`fab status` output -> {name: "LEVEL detail"}."""
    found = {}
    for line in out.stdout.splitlines():
        match = re.match(r"  (ok|WARN|FAIL) +([^:]+): (.*)", line)
        if match:
            found[match[2]] = f"{match[1]} {match[3]}"
    return found


def test_a_healthy_site_is_all_well(site):
    out = site.fab("status")  # exit 0, or it fails here
    lines = _lines(out)
    assert lines["release"].startswith(f"ok live {site.live} (commit {site.live[-7:]}"), out.stdout
    assert re.fullmatch(r"ok \d+ days left", lines["certificate"]), out.stdout
    assert lines["health"].startswith("ok GET https://app.test/healthz/ through nginx on the server -> 200")
    # The previous release may still be warm for an instant rollback: that is well too.
    assert lines["gunicorn"].startswith(f"ok {APP}@{site.live}.service active"), out.stdout
    for name in ("nginx", "postgresql", "disk", "memory", "backups", "updates", "reboot", "maintenance",
                 "certbot.timer"):
        assert lines[name].startswith("ok "), out.stdout
    assert out.stdout.rstrip().endswith("all well")


def test_the_app_stopped_makes_status_fail_naming_it(site):
    unit = f"{APP}@{site.live}.service"
    site.root(f"systemctl stop {unit}")
    try:
        out = site.fab("status", check=False)
        assert out.returncode == 2, out.stdout + out.stderr
        lines = _lines(out)
        assert lines["gunicorn"].startswith(f"FAIL {unit} (the live release) is inactive"), out.stdout
        assert lines["health"].startswith("FAIL "), out.stdout
        assert "needs attention: gunicorn, health" in out.stdout
    finally:
        site.root(f"systemctl start {unit}")
    site.fab("status")  # all well again


def test_a_failed_scheduled_job_shows_with_its_result(site):
    name = f"{APP}-job-statuscheck"
    site.root(f"printf '[Service]\\nType=oneshot\\nExecStart=/bin/false\\n' > /etc/systemd/system/{name}.service && "
              f"printf '[Timer]\\nOnCalendar=daily\\n' > /etc/systemd/system/{name}.timer && "
              f"systemctl daemon-reload && systemctl start {name}.timer && "
              f"systemctl start {name}.service || true")
    try:
        out = site.fab("status", check=False)
        assert out.returncode == 1, out.stdout + out.stderr
        line = _lines(out)[f"{name}.timer"]
        assert line.startswith("WARN ") and "next in" in line, out.stdout
    finally:
        site.root(f"systemctl stop {name}.timer; rm -f /etc/systemd/system/{name}.*; systemctl daemon-reload; "
                  f"systemctl reset-failed {name}.service {name}.timer || true")


def test_the_logs_show_a_request_and_grep_keeps_only_its_lines(site):
    marker = "probe" + secrets.token_hex(4)
    assert site.get(f"/healthz/?{marker}=1").status == 200
    time.sleep(1)  # the journal gets Gunicorn's access line a moment after the answer
    everything = site.fab("logs", "--lines", "200").stdout
    assert marker in everything and "gunicorn" in everything
    found = [line for line in site.fab("logs", "--grep", marker.upper()).stdout.splitlines() if line.strip()]
    assert len(found) == 1 and f"GET /healthz/?{marker}=1" in found[0], found
    assert site.fab("logs", "--grep", marker, "--since", "10 min ago", "--level", "info").stdout.count(marker) == 1
    nginx = site.fab("logs", "--nginx", "--grep", marker).stdout.splitlines()
    assert len(nginx) == 1 and f'"GET /healthz/?{marker}=1 HTTP/' in nginx[0] and '" 200 ' in nginx[0], nginx


def test_a_hostile_value_is_refused_or_inert(site):
    out = site.fab("logs", "--since", "$(touch /tmp/status-pwned)", check=False)
    assert out.returncode == 2 and "--since" in out.stderr
    assert site.fab("logs", "--grep", "$(touch /tmp/status-pwned)'\"").returncode == 0
    assert site.root("ls /tmp/status-pwned", check=False) == ""


def test_a_lines_value_that_is_not_a_number_is_one_sentence_naming_the_option(site):
    out = site.fab("logs", "--lines", "2; x", check=False)
    print(out.stderr.strip())
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "ValueError" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == [
        "logs: --lines '2; x': give a number of lines, e.g. --lines 500 (0: none of the past ones)"], out.stderr
    assert out.stdout == ""  # refused before logging in: no log line, no recap
    assert site.fab("logs", "--lines", "2").returncode == 0


def test_follow_shows_new_lines_until_interrupted(site):
    marker = "follow" + secrets.token_hex(4)
    process = subprocess.Popen(site.command("logs", "--follow", "--lines", "0", "--grep", marker), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(3)  # logged in, journalctl following
        assert site.get(f"/healthz/?{marker}=1").status == 200
        seen, deadline = b"", time.monotonic() + 30
        while marker.encode() not in seen and time.monotonic() < deadline:
            if select.select([process.stdout], [], [], 1)[0]:
                seen += os.read(process.stdout.fileno(), 4096)
        assert marker.encode() in seen, seen
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
