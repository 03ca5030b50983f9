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

A run whose lock `fab unlock --force` took away stops before its next step, but a step already running on
the server (a start and switch is one) runs to its end and may put its release live. So after a forced clear
`fab unlock` waits for that run's commands the same way, then reads back which release is live and the
audit log, and says what happened rather than what should have.
"""

from __future__ import annotations

import getpass
import json
import socket
from dataclasses import dataclass, field
from typing import Any

from .. import timestamps
from ..layout import Layout
from ..connection.remote import Remote, RemoteError
from ..commands import programs
from ..commands.shell import q
from ..facts.releases import parse_history
from ..facts.steps import Probe

BUSY = 75  # flock's exit code when the lock is taken
WORK_WAIT_S = 900  # how long a new run waits for an interrupted run's commands to end
UNLOCK_WAIT_S = 300  # how long `fab unlock --force` waits for the commands of the run it ended


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
    """The line `fab unlock` prints; raises LockHeld when the lock is still held. A connected holder's run
    may still be running a step on the server: `settled_report` says what it did."""
    holder = describe_holder(outcome.holder) if outcome.holder else "another run (no details recorded)"
    pids = " ".join(map(str, outcome.pids)) or "none found"
    if outcome.result == "free":
        return "the lock was free"
    if outcome.result == "cleared":
        return f"cleared the lock held by {holder}" + (" (its connection was still alive)" if outcome.connected else "")
    if outcome.result == "connected":
        pid, _, name = outcome.session.partition(" ")
        raise LockHeld(f"the deploy lock on {host} is held by {holder}, still connected (its SSH session, "
                       f"{name} process {pid}, is alive): wait for it to finish, or run `fab unlock --force` "
                       "if you are sure it is stuck")
    raise LockHeld(f"the deploy lock on {host} is still held by {holder} after ending its processes ({pids}); "
                   f"look at them with `ps -f -p {pids.replace(' ', ',')}`")


# --- after a forced clear: what the run it ended did ----------------------------------------------------------

def work_wait_command(layout: Layout, wait_s: int = UNLOCK_WAIT_S) -> str:
    """Wait up to `wait_s` for every command that holds the work lock (see `guarded`) to end: "idle" once
    none is left, "busy PID..." (the processes that still have it open) when the wait ran out."""
    return (f"w={q(layout.lock_work)}\n"
            "[ -e \"$w\" ] || { echo idle; exit 0; }\n"
            f"flock --exclusive --wait {int(wait_s)} --conflict-exit-code {BUSY} \"$w\" true; s=$?\n"
            "if [ \"$s\" = 0 ]; then echo idle; exit 0; fi\n"
            f"[ \"$s\" = {BUSY} ] || exit \"$s\"\n"
            # Every process with the work file open (find -lname takes a pattern: wildcards are escaped).
            "pattern=$(printf '%s\\n' \"$w\" | sed 's/[][*?\\\\]/\\\\&/g')\n"
            "pids=$(find /proc/[0-9]*/fd -maxdepth 1 -lname \"$pattern\" 2>/dev/null | cut -d / -f 3 | sort -nu "
            "| tr '\\n' ' ')\n"
            "echo \"busy $pids\"")


def live_link_command(layout: Layout) -> str:
    """What the live link points at: "link TARGET", or "absent" when there is none (nothing is live)."""
    return (f"l={q(layout.live_socket)}\n"
            "if [ -L \"$l\" ]; then t=$(readlink \"$l\") || exit 1; echo \"link $t\"\n"
            "elif [ -e \"$l\" ]; then exit 1\n"
            "else echo absent; fi")


def parse_work(out: str, rc: int) -> tuple[str, list[int]] | None:
    """("idle", []) or ("busy", pids); None when the wait could not be made or its answer read."""
    words = out.split()
    if rc != 0 or not words or words[0] not in ("idle", "busy"):
        return None
    try:
        return words[0], [int(p) for p in words[1:]]
    except ValueError:
        return None


def settle_probes(layout: Layout, wait_s: int = UNLOCK_WAIT_S) -> list[Probe]:
    """One round trip, in this order: wait for the ended run's commands, then read the live link and the end
    of the audit log. Each is None when it could not be read (never "none")."""
    def live(out: str, rc: int) -> str | None:
        words = out.strip().split(" ", 1)
        if rc != 0 or not words[0]:
            return None
        if words[0] == "absent":
            return ""  # no live link: nothing is live
        if words[0] == "link" and len(words) == 2:
            return layout.release_of_socket(words[1]) or words[1]
        return None

    history = q(layout.history)
    return [Probe("work", work_wait_command(layout, wait_s), parse_work),
            Probe("live_now", live_link_command(layout), live),
            Probe("audit_tail", f"if [ -e {history} ]; then tail -n 20 {history}; fi",
                  lambda out, rc: out if rc == 0 else None)]


def _event_line(event: dict) -> str:
    what = " ".join(str(event[k]) for k in ("event", "release", "result") if event.get(k))
    return f"  {event.get('time', '?')} {what} by {event.get('by', '?')}"


def settled_report(holder: str, facts: dict, layout: Layout, wait_s: int = UNLOCK_WAIT_S) -> str:
    """What the run whose lock was forced away did, as the server shows it after waiting for its commands:
    whether it switched (the audit log, since it took the lock), which release is live (the live link), and
    whether commands of it are still running. Then the audit log's last lines."""
    try:
        info = json.loads(holder) if holder else {}
    except json.JSONDecodeError:
        info = {}
    info = info if isinstance(info, dict) else {}
    work, live, tail = facts.get("work"), facts.get("live_now"), facts.get("audit_tail")
    events = parse_history(tail) if tail is not None else None
    if live is None:
        live_now = f"could not read the live link {layout.live_socket}, so which release is live is unknown"
    else:
        live_now = f"{live} is live" if live else "no release is live"

    since, by = info.get("since"), info.get("who")
    switched = None  # that run's last switch, if the audit log shows one
    if events is not None and since:
        switches = [e for e in events if e.get("event") in ("live", "rollback") and str(e.get("time", "")) >= since
                    and (not by or e.get("by") == by)]
        switched = switches[-1] if switches else None

    had = f"it had already switched to {switched.get('release')}; " if switched else ""
    if work is None:
        lines = [f"could not tell whether commands of that run are still running on the server (look with "
                 f"`ps -ef`); {had}{live_now}"]
    elif work[0] == "busy":
        pids = work[1]
        see = f"`ps -f -p {','.join(map(str, pids))}`" if pids else "`ps -ef`"
        lines = [f"commands of that run are still running on the server after {wait_s} s (see them with {see}); "
                 f"{had}they may still change what is live: {live_now}{' now' if live is not None else ''}. "
                 "Look again with `fab releases` once they end"]
    elif switched:
        target = switched.get("release")
        lines = [f"the run it held had already switched: {live_now}" if target == live else
                 f"the run it held had switched to {target}, but {live_now}"]
    elif events is None or not since:
        why = (f"could not read the audit log {layout.history}" if events is None else
               "it recorded no start time")
        lines = [f"{live_now}; whether that run switched before it stopped is unknown ({why}); that run stops "
                 "before its next step"]
    else:
        lines = [f"{f'{live} is still live' if live else live_now}; that run stops before its next step"]
    if events:
        lines.append("last lines of the audit log:")
        lines += [_event_line(e) for e in events[-3:]]
    return "\n".join(lines)


def clear_lock(remote: Remote, layout: Layout, force: bool = False, reporter: Any = None,
               wait_s: int = UNLOCK_WAIT_S) -> str:
    """Run the unlock script on the server and say what it did (LockHeld if the lock stays held). When it
    ended a run that was still connected, wait for that run's commands and say what it did."""
    result = remote.run(unlock_command(layout, force))
    outcome = parse_unlock(result.stdout)
    if outcome is None:
        raise RemoteError(f"clearing the lock failed on {remote.connection.host} (exit {result.code}):\n"
                          f"{result.tail()}")
    line = unlock_report(outcome, remote.connection.host)
    if outcome.result != "cleared" or not outcome.connected:
        return line
    if reporter is not None:
        reporter.line(f"{remote.connection.host}: {line}; waiting up to {wait_s} s for a step of that run "
                      "still running on the server to end")
        with reporter.running("waiting for that run's commands"):
            facts = remote.gather(settle_probes(layout, wait_s))
        return settled_report(outcome.holder, facts, layout, wait_s)
    facts = remote.gather(settle_probes(layout, wait_s))
    return f"{line}\n{settled_report(outcome.holder, facts, layout, wait_s)}"
