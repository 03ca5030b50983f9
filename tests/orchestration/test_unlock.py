"""`fab unlock --force` against the fake server: after ending a run that was still connected, it says what that
run did as the server shows it once its running step ended, never what it was meant to do."""

from __future__ import annotations

import io
import json

import pytest

from tasks.cli import releases
from tasks.session.lock import LockLost
from tasks.session.run import Task, _locked
from tests.orchestration import fake

OLD, NEW = "20261201T000000Z-aaaaaaa", "20261201T100000Z-bbbbbbb"
HOLDER = {"who": "alice@laptop", "what": f"deploy {NEW[-7:]}", "since": "2026-12-01T10:00:00Z", "pid": 4242}
BEFORE = {"time": "2026-12-01T09:00:00Z", "event": "live", "release": OLD, "by": "bob@desk"}
SWITCHED = {"time": "2026-12-01T10:02:00Z", "event": "live", "release": NEW, "by": "alice@laptop"}


def forced(result: str = "cleared", session: str = "812 sshd-session") -> fake.FakeRemote:
    """A server whose unlock script ended a holder (connected unless `session` is empty)."""
    remote = fake.FakeRemote(fake.server(fake.release(OLD), fake.release(NEW, status="building"), live=OLD))
    line = json.dumps({"result": result, "holder": json.dumps(HOLDER), "pids": [4242], "session": session})
    return remote.reply("\"name\": \"unlock.py\"", line + "\n")


def after(remote: fake.FakeRemote, work, live, *events) -> fake.FakeRemote:
    """What the read-back finds once the wait ended."""
    remote.facts.update(work=work, live_now=live, audit_tail="".join(json.dumps(e) + "\n" for e in events))
    return remote


def unlock(remote: fake.FakeRemote) -> list[str]:
    out = io.StringIO()
    releases.unlock_on(fake.session(remote, out=out), force=True)
    return out.getvalue().splitlines()


def test_a_run_that_had_already_switched_is_said_to_have_switched():
    remote = after(forced(), ("idle", []), NEW, BEFORE, SWITCHED)
    lines = unlock(remote)
    assert lines[0].startswith("10.0.0.2: cleared the lock held by alice@laptop (deploy bbbbbbb) since "
                               "2026-12-01T10:00:00Z (its connection was still alive); waiting up to 300 s")
    assert lines[1] == f"10.0.0.2: the run it held had already switched: {NEW} is live"
    assert f"  2026-12-01T10:02:00Z live {NEW} by alice@laptop" in lines
    assert not any("stops before its next step" in line or "without going live" in line for line in lines)
    assert remote.reads == [["work", "live_now", "audit_tail"]]  # the wait, then the reads, in one round trip


def test_a_run_that_had_not_switched_leaves_the_old_release_live_and_stops():
    remote = after(forced(), ("idle", []), OLD, BEFORE)
    lines = unlock(remote)
    assert lines[1] == f"10.0.0.2: {OLD} is still live; that run stops before its next step"
    assert remote.reads == [["work", "live_now", "audit_tail"]]


def test_a_wait_that_ran_out_names_the_commands_still_running_and_claims_nothing():
    remote = after(forced(), ("busy", [5001, 5002]), OLD, BEFORE)
    lines = unlock(remote)
    said = "\n".join(lines[1:])
    assert lines[1].startswith("10.0.0.2: commands of that run are still running on the server after 300 s (see "
                               "them with `ps -f -p 5001,5002`)")
    assert f"they may still change what is live: {OLD} is live now" in said and "`fab releases`" in said
    assert "stops before its next step" not in said and "still live" not in said


def test_a_holder_that_was_not_connected_is_cleared_without_a_wait():
    remote = forced(session="")
    assert unlock(remote) == ["10.0.0.2: cleared the lock held by alice@laptop (deploy bbbbbbb) since "
                              "2026-12-01T10:00:00Z"]
    assert remote.reads == []


# --- the run whose lock was forced away ----------------------------------------------------------------------

class ForcedAway(fake.FakeRemote):
    """A server where the lock holder's channel can be ended while the task's action runs."""

    def start(self, command: str, timeout: float = 30) -> fake.FakeChannel:
        self.channel = super().start(command, timeout)
        return self.channel

    def run(self, command: str, **options):
        """As the real Remote: the lock's wrap sees every command first, and may refuse it."""
        return super().run(self.wrap(command) if self.wrap else command, **options)


def test_a_run_forced_away_during_its_last_step_says_what_it_did_and_succeeds():
    remote, out = ForcedAway(fake.server(fake.release(OLD))), io.StringIO()

    def last_step(session):
        session.remote.run("true")  # the last step, under the lock; while it ran, `fab unlock --force`
        remote.channel.close()
        return "switched"

    assert _locked(fake.session(remote, out=out), Task("deploy", lock="deploy"), last_step) == "switched"
    said = out.getvalue()
    assert "WARNING   lock: this run's deploy lock on 10.0.0.2 was taken away (by `fab unlock --force`) " in said
    assert "its audit line was not written" in said
    assert not remote.sent('"result": "ok"')  # nothing was sent after the lock was gone


def test_a_run_forced_away_before_a_step_still_stops_there():
    remote = ForcedAway(fake.server(fake.release(OLD)))

    def two_steps(session):
        remote.channel.close()
        session.remote.run("true")  # the next step: refused

    with pytest.raises(LockLost, match="stopped before its next step"):
        _locked(fake.session(remote), Task("deploy", lock="deploy"), two_steps)
    assert remote.scripts[1:] == []  # only the holder was started: no step, no audit line
