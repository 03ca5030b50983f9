"""A real reboot of the server: the site must come back by itself, over HTTPS, with no fab command.

The shared Debian 13 server boots on its own disk (testhost.start(persistent=True)); TestHost.reboot() powers
it off cleanly and on again, as a reboot of a cloud VM does. This module runs last (see conftest.py)
because it restarts the shared server. The first two tests check the harness itself.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import testhost
from tests.integration.appsite import Site, deployed_id, make_site
from tests.integration.conftest import APP, REPO

HTTPS_BOUND = 90  # seconds from power-on to the live release answering; measured and printed


def test_the_harness_reboot_keeps_the_disk_and_teardown_removes_it():
    host = testhost.start("trixie", persistent=True)
    copy = Path(host._state["copy"])
    try:
        assert copy.is_dir()
        assert host.ssh("echo kept > /root/on-disk && echo gone > /run/in-memory && sync").returncode == 0
        first = host.powered_on
        seconds = host.reboot()
        print(f"\nbare server: off and on again until SSH answers in {seconds:.1f} s")
        assert host.powered_on > first
        assert host.ssh("cat /root/on-disk").stdout == "kept\n"
        assert host.ssh("test -e /run/in-memory").returncode == 1  # a new boot: /run starts empty
        assert host.ssh("systemctl is-system-running --wait", timeout=120).stdout.strip() in ("running", "degraded")
    finally:
        host.stop()
    assert not copy.exists() and not copy.with_name(f".#{copy.name}.lck").exists()


def test_the_reaper_removes_the_disk_of_a_dead_run():
    name = f"reap-{os.getpid()}"
    up = subprocess.run([sys.executable, "-m", "tests.testhost", "up", "--persistent", "--name", name], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    try:
        state = json.loads((testhost.RUN_DIR / f"{name}.json").read_text())
        copy, nspawn = Path(state["copy"]), state["procs"]["nspawn"]
        assert copy.is_dir() and testhost.alive(nspawn)
        os.kill(nspawn["pid"], signal.SIGKILL)  # the run dies without cleaning up (a detached host's owner)
        deadline = time.monotonic() + 10
        while testhost.alive(nspawn) and time.monotonic() < deadline:
            time.sleep(0.1)
        testhost.reap_stale()
        assert not copy.exists()
        assert not (testhost.RUN_DIR / f"{name}.json").exists()
    finally:
        if (testhost.RUN_DIR / f"{name}.json").exists():
            testhost.down(name)


class RebootSite(Site):
    def units(self) -> set[str]:
        """The releases whose units systemd lists (running, or failed)."""
        listed = self.root(f"systemctl list-units --plain --no-legend '{APP}@*'")
        return set(re.findall(rf"^{APP}@(\S+?)\.(?:service|socket)\s", listed, re.M))


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory) -> RebootSite:
    return make_site(trixie, tmp_path_factory, "reboot", kind=RebootSite)


def test_after_a_real_reboot_the_live_release_serves_https_with_no_fab_command(site):
    # A release of this module's own to roll back to after the reboot: one an earlier module left live may
    # need what that module took away again (its services' environment, say).
    site.repo.set_version("before-reboot-1")
    previous = deployed_id(site.deploy())
    # One more code-only deploy, so that the release before it is warm in its standby window, as after
    # any deploy: a reboot must not bring that one back.
    site.repo.set_version("before-reboot")
    live = deployed_id(site.deploy())
    assert site.answering() == f"before-reboot {live}"
    assert {live, previous} <= site.units(), "precondition: the previous release is kept warm after a deploy"

    host = site.server.host
    seconds = host.reboot()
    powered_on = host.powered_on
    first_200 = first_answer = None
    waited = HTTPS_BOUND + 30  # a little past the bound, to measure a slow start too
    last = ""
    while time.monotonic() < powered_on + waited:  # bounded: one request at a time, at most every 0.2 s
        try:
            response = site.get(timeout=5)
            if first_answer is None:
                first_answer = time.monotonic() - powered_on
            if response.status == 200:
                first_200 = time.monotonic() - powered_on
                break
            last = f"{response.status}: {response.body[:200]}"
        except (OSError, ValueError, IndexError) as exc:  # refused, reset, TLS not ready, empty answer
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    print(f"\nreboot of the provisioned server: off and on again until SSH answers {seconds:.1f} s; "
          f"power-on to the first HTTPS answer: "
          + (f"{first_answer:.1f} s" if first_answer is not None else "none")
          + "; to the first 200: "
          + (f"{first_200:.1f} s" if first_200 is not None else f"none within {waited} s ({last[:80]})"))
    assert first_200 is not None, f"the site did not come back after a reboot; last answer: {last}"
    assert first_200 < HTTPS_BOUND
    assert site.answering() == f"before-reboot {live}"

    # The server's own account of it agrees, and only the live release runs: a standby window does not
    # outlive a reboot.
    listing = site.fab("releases").stdout
    assert re.search(rf"^{live} .* current ", listing, re.M), listing
    assert site.units() == {live}

    # And the history still works: back to the release before, started again since it was not running.
    out = site.rollback().stdout
    assert f"rolled back to {previous}" in out, out
    assert site.answering().endswith(f" {previous}")
    assert re.search(rf"^{previous} .* current ", site.fab("releases").stdout, re.M)


def test_after_a_reboot_a_timer_that_never_ran_still_says_so(site):
    """systemd reads a timer's LastTriggerUSec back from its stamp file after a reboot, a file it created when
    the timer first started: `fab status` must not take that for a run, nor the service's default result."""
    never, ran = f"{APP}-job-rebootnever", f"{APP}-job-rebootran"
    units = " ".join(f"/etc/systemd/system/{name}.service /etc/systemd/system/{name}.timer" for name in (never, ran))
    site.root(f"for name in {never} {ran}; do "
              "printf '[Service]\\nType=oneshot\\nExecStart=/bin/true\\n' > /etc/systemd/system/$name.service; "
              "printf '[Timer]\\nOnCalendar=*-01-01 00:00:00\\nPersistent=true\\n[Install]\\nWantedBy=timers.target\\n' "
              "> /etc/systemd/system/$name.timer; "
              f"done; systemctl daemon-reload; systemctl enable --now {never}.timer {ran}.timer; "
              f"systemctl start {ran}.service")
    try:
        time.sleep(2)  # the stamp file's mtime must be in the past to be read back as a "last trigger"
        lines = status_lines(site)
        assert lines[f"{never}.timer"].startswith("ok has not run yet, next in "), lines
        assert lines[f"{ran}.timer"].startswith("ok last ran "), lines

        site.server.host.reboot()
        site.root("systemctl is-system-running --wait || true")
        trigger = site.root(f"systemctl show -p LastTriggerUSec --value {never}.timer").strip()
        print(f"\nafter the reboot, systemd says {never}.timer last triggered: {trigger or '(never)'}")
        lines = status_lines(site)
        assert lines[f"{never}.timer"].startswith("ok has not run yet, next in "), lines
        assert "success" not in lines[f"{never}.timer"]
        # The run before the reboot is known from the journal, with its result.
        assert re.match(r"ok last ran .+ ago \(success\), next in ", lines[f"{ran}.timer"]), lines
    finally:
        site.root(f"systemctl disable --now {never}.timer {ran}.timer; rm -f {units} "
                  f"/var/lib/systemd/timers/stamp-{never}.timer /var/lib/systemd/timers/stamp-{ran}.timer; "
                  "systemctl daemon-reload", check=False)


def status_lines(site) -> dict[str, str]:
    """`fab status` lines, {name: "LEVEL detail"}; its exit status may be 1 for unrelated warnings."""
    out = site.fab("status", check=False)
    assert out.returncode in (0, 1), out.stdout + out.stderr
    return {m[2]: f"{m[1]} {m[3]}" for m in re.finditer(r"^  (ok|WARN|FAIL) +([^:]+): (.*)$", out.stdout, re.M)}
