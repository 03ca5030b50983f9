"""`fab unlock` without a server: the real scripts, run locally with sh and flock(1) against real holders.

On a server a holder is "connected" when an sshd session process is one of its ancestors. Here the holders
are started by this test process, so naming this process's own name as the session stands in for sshd, and
a name no process has stands in for a holder that no live connection owns.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.layout import Layout
from tasks.session.lock import (SSH_SESSIONS, LockHeld, Unlocked, holder_command, parse_unlock, unlock_command,
                        unlock_report)
from tasks.commands import programs
from tests.unit.shellcheck import assert_shellcheck_clean
from tests.unit.test_release_commands import HOSTILE

ME = Path("/proc/self/comm").read_text().strip()  # this test process: an ancestor of every holder it starts
NOBODY = "no-such-process"
INFO = {"who": "alice@laptop", "what": "deploy 1a2b3c4", "since": "2026-11-27 10:00:00 UTC", "pid": 0}


@dataclass(frozen=True)
class LocalLayout(Layout):
    """The app's layout, with the lock files in a local directory."""
    here: str = ""

    @property
    def state(self) -> str:
        return self.here


@pytest.fixture
def layout(tmp_path) -> LocalLayout:
    return LocalLayout("m", str(tmp_path))


@pytest.fixture
def holder(layout):
    """A run holding the lock, as DeployLock starts it (the real holder command), until its input ends."""
    run = subprocess.Popen(["sh", "-c", holder_command(layout, INFO)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    assert run.stdout.readline().strip() == "acquired"
    yield run
    if run.poll() is None:
        run.stdin.close()
        run.wait(timeout=5)


def unlock(layout, force=False, sessions=(ME,)) -> Unlocked:
    out = subprocess.run(["sh", "-c", unlock_command(layout, force, sessions)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 1, out.stdout  # one JSON line, nothing else
    outcome = parse_unlock(out.stdout)
    assert outcome is not None, out.stdout
    return outcome


def lock_is_free(layout) -> bool:
    return subprocess.run(["flock", "--nonblock", layout.lock, "true"]).returncode == 0


def test_a_free_lock_is_reported_free(layout):
    outcome = unlock(layout)
    assert outcome.result == "free" and outcome.pids == [] and not outcome.connected
    assert unlock_report(outcome, "h") == "the lock was free"


def test_a_holder_on_a_live_connection_is_left_alone(layout, holder):
    outcome = unlock(layout, sessions=(ME,))
    assert outcome.result == "connected" and outcome.connected
    session_pid, name = outcome.session.split()
    assert name == ME and int(session_pid) > 1
    assert json.loads(outcome.holder)["pid"] in outcome.pids  # the recorded holder is among those found
    assert holder.poll() is None and not lock_is_free(layout)  # nothing was ended
    with pytest.raises(LockHeld) as refused:
        unlock_report(outcome, "203.0.113.5")
    message = str(refused.value)
    assert "\n" not in message
    assert "alice@laptop (deploy 1a2b3c4) since 2026-11-27 10:00:00 UTC" in message
    assert "203.0.113.5" in message and "still connected" in message
    assert "wait for it to finish, or run `fab unlock --force` if you are sure it is stuck" in message


def test_a_holder_no_live_connection_owns_is_ended(layout, holder):
    outcome = unlock(layout, sessions=(NOBODY,))
    assert outcome.result == "cleared" and not outcome.connected
    assert unlock_report(outcome, "h") == "cleared the lock held by alice@laptop (deploy 1a2b3c4) since " \
                                          "2026-11-27 10:00:00 UTC"
    holder.wait(timeout=5)
    assert lock_is_free(layout)


def test_force_ends_a_connected_holder(layout, holder):
    outcome = unlock(layout, force=True, sessions=(ME,))
    assert outcome.result == "cleared" and outcome.connected
    line = unlock_report(outcome, "h")
    assert line.startswith("cleared the lock held by alice@laptop") and "still alive" in line
    holder.wait(timeout=5)
    assert lock_is_free(layout)
    assert unlock(layout).result == "free"


def test_a_holder_that_ignores_sigterm_is_killed(layout):
    """A hung holder (here one that ignores SIGTERM), with no recorded info, detached from any session."""
    hung = subprocess.Popen(["flock", layout.lock, "sh", "-c", "trap '' TERM; echo held; while :; do sleep 0.1; done"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert hung.stdout.readline().strip() == "held"
        outcome = unlock(layout, sessions=(NOBODY,))
        assert outcome.result == "cleared" and hung.pid in outcome.pids
        assert unlock_report(outcome, "h") == "cleared the lock held by another run (no details recorded)"
    finally:
        if hung.poll() is None:
            hung.kill()
        hung.wait(timeout=5)


def test_what_a_holder_recorded_reaches_the_report_intact_whatever_it_contains(layout, tmp_path):
    odd = {"who": 'eve "quoted" \\ back@slash', "what": "deploy", "since": "now", "pid": 0}
    run = subprocess.Popen(["sh", "-c", holder_command(layout, odd)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    try:
        assert run.stdout.readline().strip() == "acquired"
        outcome = unlock(layout, sessions=(ME,))
        assert json.loads(outcome.holder)["who"] == odd["who"]
        Path(layout.lock_info).write_text('{"who": "x",\n\t"since": "garbled')  # a broken record
        outcome = unlock(layout, sessions=(ME,))
        assert outcome.result == "connected" and outcome.holder == '{"who": "x","since": "garbled'
        with pytest.raises(LockHeld, match="another run \\(no details recorded\\)"):
            unlock_report(outcome, "h")
    finally:
        run.stdin.close()
        run.wait(timeout=5)


def test_values_reach_the_program_as_data():
    script = unlock_command(Layout("m"), force=True, sessions=("sshd-session", "sshd"))
    document = json.loads(script.splitlines()[1])
    assert document["name"] == "unlock.py" and document["program"] == programs.source("unlock.py")
    assert document["args"] == {"lock": "/srv/m/state/deploy.lock", "info": "/srv/m/state/deploy.lock.info",
                                "force": True, "sessions": ["sshd-session", "sshd"]}
    assert json.loads(unlock_command(Layout("m")).splitlines()[1])["args"]["force"] is False
    assert SSH_SESSIONS == ("sshd-session", "sshd")  # Debian 13's per-connection process, then Debian 12's
    assert_shellcheck_clean(script)


@pytest.mark.parametrize("value", HOSTILE + ["glob*[ab]?"])
def test_a_lock_in_a_hostile_directory_is_found_and_cleared_and_nothing_runs(tmp_path, value):
    """The lock file's path is matched exactly (no wildcard in it is a pattern) and is never shell text."""
    (tmp_path / value).mkdir()
    layout = LocalLayout("m", str(tmp_path / value))
    run = subprocess.Popen(["sh", "-c", holder_command(layout, INFO)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert run.stdout.readline().strip() == "acquired"
        out = subprocess.run(["sh", "-c", unlock_command(layout, sessions=(NOBODY,))], capture_output=True,
                             text=True, timeout=30, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        outcome = parse_unlock(out.stdout)
        assert outcome.result == "cleared" and json.loads(outcome.holder)["pid"] in outcome.pids
        run.wait(timeout=5)
        assert lock_is_free(layout)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(timeout=5)
    assert not (tmp_path / "CANARY").exists()


def test_the_script_output_is_parsed_as_data_and_garbage_is_not_an_answer():
    line = '{"result": "held", "holder": "", "pids": [12, 13], "session": ""}'
    outcome = parse_unlock("a warning from sudo\n" + line + "\n")
    assert outcome == Unlocked("held", "", [12, 13], "")
    with pytest.raises(LockHeld, match=r"still held by another run .* \(12 13\); .*ps -f -p 12,13"):
        unlock_report(outcome, "h")
    assert parse_unlock("") is None and parse_unlock("{not json") is None and parse_unlock('{"pids": []}') is None
