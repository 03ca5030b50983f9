"""The deploy lock: one deploy or rollback at a time per app, released even when the client dies.

The lock is an flock(1) held by a process on the server that lives exactly as long as this SSH channel:
when fab ends, is interrupted, or loses its connection, the channel closes, the process sees end of input
and exits, and the lock is free again. `fab unlock` ends a holder that is still there but no longer attached
to an SSH connection (a hung process); a holder whose connection is alive is a run in progress, and only
`fab unlock --force` ends it. sshd drops a dead client's connection within about a minute (ClientAlive*),
and the lock with it.

A run that dies can leave commands running on the server (a pip install, a migration). Each command of a
locked run holds a shared lock on a second file for as long as it and its children live, and a new run,
once it holds the lock, waits until no such command is left before it touches anything.
"""

from __future__ import annotations

import getpass
import json
import socket
from dataclasses import dataclass, field

from .. import timestamps
from ..layout import Layout
from ..connection.remote import Remote, RemoteError
from ..commands import programs
from ..commands.shell import q

BUSY = 75  # flock's exit code when the lock is taken
WORK_WAIT_S = 900  # how long a new run waits for an interrupted run's commands to end


class LockBusy(RemoteError):
    """Another deploy or rollback holds the lock."""


class LockLost(RemoteError):
    """The lock this run held is gone (forced away): nothing more may be changed."""


def holder_command(layout: Layout, info: dict, if_provisioned: bool = False) -> str:
    """Take the lock, record who holds it, then wait for the end of input while holding it. With
    `if_provisioned`, a server without the app's state directory yet (a first provision) answers "absent"."""
    lock, info_path, work = q(layout.lock), q(layout.lock_info), q(layout.lock_work)
    absent = f"[ -d {q(layout.state)} ] || {{ echo absent; exit 0; }}; " if if_provisioned else ""
    record = q(json.dumps(info))
    hold = q(f"flock --exclusive --wait {WORK_WAIT_S} {work} true || {{ echo stuck; exit 1; }}; "
             f"printf '%s\\n' {record} | sed \"s/\\\"pid\\\": 0/\\\"pid\\\": $$/\" > {info_path}; "
             f"echo acquired; exec cat >/dev/null")
    return (f"{absent}flock --nonblock --conflict-exit-code {BUSY} {lock} sh -c {hold} "
            f"|| {{ s=$?; if [ $s = {BUSY} ]; then echo busy; cat {info_path} 2>/dev/null; fi; exit $s; }}")


def guarded(layout: Layout, script: str) -> str:
    """`script`, holding the shared work lock while it and anything it starts are alive."""
    return f"exec 9>>{q(layout.lock_work)}; flock --shared 9\n{script}"


def who() -> str:
    """The operator, as the lock and the audit log name them: user@machine."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return "another run (no details recorded)"
    return f"{info.get('who', '?')} ({info.get('what', '?')}) since {info.get('since', '?')}"


class DeployLock:
    """The deploy lock, held for a `with` block. `held` says whether it was taken: with `if_provisioned`, a
    server that has no place for it yet (before its first provision) runs the block without it."""

    def __init__(self, remote: Remote, layout: Layout, what: str, if_provisioned: bool = False):
        self.remote = remote
        self.layout = layout
        self.what = what
        self.if_provisioned = if_provisioned
        self.channel = None
        self.held = False

    def __enter__(self) -> "DeployLock":
        info = {"who": who(), "what": self.what, "pid": 0,
                "since": timestamps.now()}
        self.channel = self.remote.start(holder_command(self.layout, info, self.if_provisioned),
                                         timeout=WORK_WAIT_S + 30)
        reader = self.channel.makefile("r")
        first = reader.readline().strip()
        if first == "acquired":
            self.remote.wrap = self._guarded
            self.held = True
            return self
        if first == "absent":
            self.channel.close()
            return self
        rest = reader.read().strip()
        self.channel.close()
        if first == "stuck":
            raise RemoteError(f"commands of an interrupted run are still running on the server after "
                              f"{WORK_WAIT_S} s; look at them with `ps -ef`, end them, then try again")
        if first == "busy":
            raise LockBusy(f"another deploy or rollback is running: {describe_holder(rest)}. Wait for it to "
                           "finish; if that run is dead, clear its lock with `fab unlock`")
        raise RemoteError(f"could not take the deploy lock {self.layout.lock} ({first} {rest}); was the server "
                          "provisioned with `fab provision`?")

    def _guarded(self, script: str) -> str:
        """Every command of the run holds the work lock; none starts once the deploy lock was taken away."""
        transport = self.remote.connection.transport
        alive = transport is not None and transport.is_active()  # if not, Remote says the connection was lost
        if alive and (self.channel.closed or self.channel.exit_status_ready()):
            raise LockLost(f"this run's deploy lock on {self.remote.connection.host} was taken away (by `fab unlock "
                           "--force`, or its holder was killed); it stopped before its next step. Another run may "
                           "be changing the server now: look at `fab releases` before deploying again")
        return guarded(self.layout, script)

    def __exit__(self, *exc) -> None:
        self.remote.wrap = None
        self.held = False
        if self.channel is not None:
            try:
                self.channel.shutdown_write()
                self.channel.close()
            except Exception:
                pass  # the connection is gone: the server frees the lock by itself


# The per-connection sshd process that a holder started over SSH descends from: `sshd-session` on Debian 13,
# `sshd` (titled "sshd: user@notty") on Debian 12. The listening sshd is an ancestor only through one of them.
SSH_SESSIONS = ("sshd-session", "sshd")

def unlock_command(layout: Layout, force: bool = False, sessions: tuple[str, ...] = SSH_SESSIONS) -> str:
    """The script `fab unlock` runs (as root), templates/programs/unlock.py: free if nobody holds the lock;
    "connected" (and nothing ended) if a holder is attached to a live SSH session, unless `force`; else it ends
    every process holding the lock file and says whether the lock is free now. One JSON line, read by
    `parse_unlock`."""
    return programs.python("unlock.py", {"lock": layout.lock, "info": layout.lock_info, "force": bool(force),
                                         "sessions": list(sessions)})


@dataclass
class Unlocked:
    """What the unlock script found and did."""
    result: str  # free, connected (nothing done), cleared, held (could not be cleared)
    holder: str = ""  # the lock info the holder recorded (JSON text), if any
    pids: list[int] = field(default_factory=list)  # the processes that held the lock file
    session: str = ""  # "PID NAME" of the live SSH session a holder belongs to, if any

    @property
    def connected(self) -> bool:
        return bool(self.session)


def parse_unlock(stdout: str) -> Unlocked | None:
    """The unlock script's JSON line; None when there is none (the script did not run to its end)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                data = json.loads(line)
                return Unlocked(str(data["result"]), str(data.get("holder") or ""),
                                [int(p) for p in data.get("pids") or []], str(data.get("session") or ""))
            except (ValueError, KeyError, TypeError):
                return None
    return None


class LockHeld(RemoteError):
    """`fab unlock` left the lock in place: its holder is still connected, or could not be ended."""


def unlock_report(outcome: Unlocked, host: str) -> str:
    """The line `fab unlock` prints; raises LockHeld when the lock is still held."""
    holder = describe_holder(outcome.holder) if outcome.holder else "another run (no details recorded)"
    pids = " ".join(map(str, outcome.pids)) or "none found"
    if outcome.result == "free":
        return "the lock was free"
    if outcome.result == "cleared":
        return f"cleared the lock held by {holder}" + (
            " (its connection was still alive: that run stops without going live)" if outcome.connected else "")
    if outcome.result == "connected":
        pid, _, name = outcome.session.partition(" ")
        raise LockHeld(f"the deploy lock on {host} is held by {holder}, still connected (its SSH session, "
                       f"{name} process {pid}, is alive): wait for it to finish, or run `fab unlock --force` "
                       "if you are sure it is stuck")
    raise LockHeld(f"the deploy lock on {host} is still held by {holder} after ending its processes ({pids}); "
                   f"look at them with `ps -f -p {pids.replace(' ', ',')}`")


def clear_lock(remote: Remote, layout: Layout, force: bool = False) -> str:
    """Run the unlock script on the server and say what it did (LockHeld if the lock stays held)."""
    result = remote.run(unlock_command(layout, force))
    outcome = parse_unlock(result.stdout)
    if outcome is None:
        raise RemoteError(f"clearing the lock failed on {remote.connection.host} (exit {result.code}):\n"
                          f"{result.tail()}")
    return unlock_report(outcome, remote.connection.host)
