"""The deploy lock: one deploy or rollback at a time per app, released even when the client dies.

The lock is an flock(1) held by a process on the server that lives exactly as long as this SSH channel:
when fab ends, is interrupted, or loses its connection, the channel closes, the process sees end of input
and exits, and the lock is free again. `fab unlock` ends a holder that is still there (a hung connection).

A run that dies can leave commands running on the server (a pip install, a migration). Each command of a
locked run holds a shared lock on a second file for as long as it and its children live, and a new run,
once it holds the lock, waits until no such command is left before it touches anything.
"""

from __future__ import annotations

import getpass
import json
import socket
from datetime import datetime, timezone

from tasks.layout import Layout
from tasks.remote import Remote, RemoteError
from tasks.shell import q

BUSY = 75  # flock's exit code when the lock is taken
WORK_WAIT_S = 900  # how long a new run waits for an interrupted run's commands to end


class LockBusy(RemoteError):
    """Another deploy or rollback holds the lock."""


def holder_command(layout: Layout, info: dict) -> str:
    """Take the lock, record who holds it, then wait for the end of input while holding it."""
    lock, info_path, work = q(layout.lock), q(layout.lock_info), q(layout.lock_work)
    record = q(json.dumps(info))
    hold = q(f"flock --exclusive --wait {WORK_WAIT_S} {work} true || {{ echo stuck; exit 1; }}; "
             f"printf '%s\\n' {record} | sed \"s/\\\"pid\\\": 0/\\\"pid\\\": $$/\" > {info_path}; "
             f"echo acquired; exec cat >/dev/null")
    return (f"flock --nonblock --conflict-exit-code {BUSY} {lock} sh -c {hold} "
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
    def __init__(self, remote: Remote, layout: Layout, what: str):
        self.remote = remote
        self.layout = layout
        self.what = what
        self.channel = None

    def __enter__(self) -> "DeployLock":
        info = {"who": who(), "what": self.what, "pid": 0,
                "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
        transport = self.remote.connection.transport
        self.channel = transport.open_session()
        self.channel.settimeout(30)
        self.remote.stats.commands += 1
        self.channel.exec_command(holder_command(self.layout, info))
        reader = self.channel.makefile("r")
        first = reader.readline().strip()
        if first == "acquired":
            self.remote.wrap = lambda script: guarded(self.layout, script)
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

    def __exit__(self, *exc) -> None:
        self.remote.wrap = None
        if self.channel is not None:
            try:
                self.channel.shutdown_write()
                self.channel.close()
            except Exception:
                pass  # the connection is gone: the server frees the lock by itself


def unlock_command(layout: Layout) -> str:
    """End the processes holding the lock (the recorded holder, and anything else that has the lock file
    open); print who held it, then whether the lock is free now."""
    lock, info = q(layout.lock), q(layout.lock_info)
    return f"""if flock --nonblock {lock} true; then echo free; exit 0; fi
cat {info} 2>/dev/null || echo '{{}}'
echo
pid=$(sed -n 's/.*"pid": \\([0-9][0-9]*\\).*/\\1/p' {info} 2>/dev/null)
holders=$(for p in /proc/[0-9]*; do ls -l "$p/fd" 2>/dev/null | grep -q -- "-> {layout.lock}$" && echo "${{p#/proc/}}"; done)
for p in $pid $holders; do kill "$p" 2>/dev/null || true; done
if flock --wait 5 {lock} true; then echo cleared; else echo "still held"; exit 1; fi
"""
