"""`fab unlock --force` against the fake server: after ending a run that was still connected, it says what that
run did as the server shows it once its running step ended, never what it was meant to do."""

from __future__ import annotations

import io
import json

from tasks.cli import deploy
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
    deploy.unlock_on(fake.session(remote, out=out), force=True)
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
