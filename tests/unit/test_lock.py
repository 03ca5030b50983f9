"""`fab unlock` without a server: the real scripts, run locally with sh and flock(1) against real holders.

On a server a holder is "connected" when an sshd session process is one of its ancestors. Here the holders
are started by this test process, so naming this process's own name as the session stands in for sshd, and
a name no process has stands in for a holder that no live connection owns.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.layout import Layout
from tasks.session.lock import (SSH_SESSIONS, LockHeld, Unlocked, guarded, holder_command, parse_unlock, parse_work,
                                settle_probes, settled_report, unlock_command, unlock_report)
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


# --- after a forced clear: waiting for that run's commands, then reading back what it did -----------------------

@dataclass(frozen=True)
class LocalRoot(LocalLayout):
    """The app's layout with its whole tree (the live link, the audit log) in a local directory."""

    @property
    def root(self) -> str:
        return self.here


def probe(p, timeout=30):
    """A probe as `Remote.gather` runs it: in a subshell, no input, no stderr; its parsed value."""
    out = subprocess.run(["sh", "-c", f"( {p.command} ) </dev/null 2>/dev/null"], capture_output=True, text=True,
                         timeout=timeout)
    return p.parse(out.stdout, out.returncode)


def settle(layout, wait_s=1) -> dict:
    return {p.key: probe(p) for p in settle_probes(layout, wait_s)}


def test_the_wait_ends_at_once_when_no_command_of_a_run_is_left(tmp_path):
    layout = LocalRoot("m", str(tmp_path))
    assert settle(layout)["work"] == ("idle", [])  # no work file yet: no run ever ran a command
    Path(layout.lock_work).touch()
    assert settle(layout)["work"] == ("idle", [])


def test_a_command_still_holding_the_work_lock_is_waited_for_then_named(tmp_path):
    layout = LocalRoot("m", str(tmp_path))
    step = subprocess.Popen(["sh", "-c", guarded(layout, "echo running; sleep 30")], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert step.stdout.readline().strip() == "running"
        work = settle(layout, wait_s=1)["work"]
        assert work[0] == "busy" and step.pid in work[1]  # the step, by the pid `ps -f -p` is told
    finally:
        os.killpg(step.pid, signal.SIGKILL)  # the step and the command it started, which holds the lock too
        step.wait(timeout=5)
    assert settle(layout, wait_s=5)["work"] == ("idle", [])


def test_a_step_that_ends_within_the_wait_is_waited_for(tmp_path):
    layout = LocalRoot("m", str(tmp_path))
    step = subprocess.Popen(["sh", "-c", guarded(layout, "echo running; sleep 1")], stdout=subprocess.PIPE, text=True)
    try:
        assert step.stdout.readline().strip() == "running"
        assert settle(layout, wait_s=20)["work"] == ("idle", [])
        assert step.poll() is not None  # it had ended when the wait did
    finally:
        step.wait(timeout=5)


def test_the_live_link_is_read_back_and_an_unreadable_one_is_not_none(tmp_path):
    layout = LocalRoot("m", str(tmp_path))
    assert settle(layout)["live_now"] == ""  # no link: nothing is live
    Path(layout.live_socket).symlink_to(layout.socket("20261201T000000Z-aaaaaaa"))
    assert settle(layout)["live_now"] == "20261201T000000Z-aaaaaaa"
    Path(layout.live_socket).unlink()
    Path(layout.live_socket).write_text("not a link")
    assert settle(layout)["live_now"] is None


def test_the_audit_log_is_read_back_and_an_unreadable_one_is_not_empty(tmp_path):
    layout = LocalRoot("m", str(tmp_path))
    assert settle(layout)["audit_tail"] == ""  # no log yet
    lines = [json.dumps({"time": f"2026-12-01T00:00:{i:02d}Z", "event": "x"}) for i in range(30)]
    Path(layout.history).write_text("\n".join(lines) + "\n")
    assert settle(layout)["audit_tail"].splitlines() == lines[-20:]
    Path(layout.history).unlink()
    Path(layout.history).mkdir()  # tail fails on it
    assert settle(layout)["audit_tail"] is None


def test_the_read_back_scripts_pass_shellcheck_and_quote_the_paths():
    probes = settle_probes(Layout("m"), 300)
    assert [p.key for p in probes] == ["work", "live_now", "audit_tail"]  # the wait comes before the reads
    assert "flock --exclusive --wait 300 --conflict-exit-code 75 \"$w\" true" in probes[0].command
    for p in probes:
        assert_shellcheck_clean(p.command)
    odd = settle_probes(Layout("m y"), 5)
    assert "w='/srv/m y/state/deploy.work'" in odd[0].command and "l='/srv/m y/live.sock'" in odd[1].command
    assert parse_work("busy 12 x", 0) is None and parse_work("", 0) is None and parse_work("idle", 1) is None


HOLDER = json.dumps({**INFO, "since": "2026-12-01T10:00:00Z"})
OLD, NEW = "20261201T000000Z-aaaaaaa", "20261201T100000Z-bbbbbbb"


def audit(*events) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


BEFORE = {"time": "2026-12-01T09:00:00Z", "event": "live", "release": OLD, "by": "bob@desk"}
SWITCHED = {"time": "2026-12-01T10:02:00Z", "event": "live", "release": NEW, "by": "alice@laptop"}


def test_the_report_says_the_run_had_switched_when_the_audit_log_and_the_live_link_show_it():
    said = settled_report(HOLDER, {"work": ("idle", []), "live_now": NEW, "audit_tail": audit(BEFORE, SWITCHED)},
                          Layout("m"))
    first, *rest = said.splitlines()
    assert first == f"the run it held had already switched: {NEW} is live"
    assert rest[0] == "last lines of the audit log:"
    assert rest[-1] == f"  2026-12-01T10:02:00Z live {NEW} by alice@laptop"


def test_the_report_says_the_old_release_is_still_live_when_the_run_had_not_switched():
    said = settled_report(HOLDER, {"work": ("idle", []), "live_now": OLD, "audit_tail": audit(BEFORE)}, Layout("m"))
    assert said.splitlines()[0] == f"{OLD} is still live; that run stops before its next step"
    # A switch by someone else, or before that run took the lock, is not that run's.
    earlier = {**SWITCHED, "time": "2026-12-01T09:59:59Z"}
    said = settled_report(HOLDER, {"work": ("idle", []), "live_now": NEW, "audit_tail": audit(earlier)}, Layout("m"))
    assert said.splitlines()[0] == f"{NEW} is still live; that run stops before its next step"


def test_the_report_names_the_commands_still_running_when_the_wait_ran_out():
    said = settled_report(HOLDER, {"work": ("busy", [41, 42]), "live_now": OLD, "audit_tail": audit(BEFORE)},
                          Layout("m"), 300)
    first = said.splitlines()[0]
    assert first.startswith("commands of that run are still running on the server after 300 s (see them with "
                            "`ps -f -p 41,42`)")
    assert f"they may still change what is live: {OLD} is live now" in first and "`fab releases`" in first
    assert "stops before its next step" not in said


def test_what_could_not_be_read_is_said_and_never_taken_for_none():
    said = settled_report(HOLDER, {"work": ("idle", []), "live_now": None, "audit_tail": None}, Layout("m"))
    assert said == ("could not read the live link /srv/m/live.sock, so which release is live is unknown; whether "
                    "that run switched before it stopped is unknown (could not read the audit log "
                    "/srv/m/state/history.log); that run stops before its next step")
    said = settled_report(HOLDER, {"work": None, "live_now": OLD, "audit_tail": ""}, Layout("m"))
    assert said.startswith("could not tell whether commands of that run are still running on the server")
    assert "no release is live" in settled_report("", {"work": ("idle", []), "live_now": "", "audit_tail": ""},
                                                  Layout("m"))


def test_a_switch_the_live_link_no_longer_shows_is_said_as_both():
    said = settled_report(HOLDER, {"work": ("idle", []), "live_now": OLD, "audit_tail": audit(BEFORE, SWITCHED)},
                          Layout("m"))
    assert said.splitlines()[0] == f"the run it held had switched to {NEW}, but {OLD} is live"
    said = settled_report(HOLDER, {"work": None, "live_now": NEW, "audit_tail": audit(SWITCHED)}, Layout("m"))
    assert said.splitlines()[0].endswith(f"(look with `ps -ef`); it had already switched to {NEW}; {NEW} is live")
