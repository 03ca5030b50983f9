"""`fab unlock` on the server (as root): free if nobody holds the deploy lock; "connected" (and nothing ended)
if a holder is attached to a live SSH session, unless `force`; else end every process holding the lock file
(SIGTERM, then SIGKILL) and say whether the lock is free now.

A holder is any process with the lock file open; it is "connected" when it or one of its ancestors is an sshd
session process (a process named as one of `sessions`).

Input (JSON): {"lock": the lock file, "info": the file its holder records itself in, "force": bool,
"sessions": the names of sshd's per-connection processes}.
Prints one JSON line: {"result": free | connected | cleared | held, "holder": what the holder recorded (text),
"pids": the processes that held the lock file, "session": "PID NAME" of the live SSH session, or ""}.
"""

import fcntl
import json
import os
import signal
import sys
import time

args = json.load(sys.stdin)
lock, info, force, sessions = args["lock"], args["info"], args["force"], args["sessions"]


def free(wait):
    """Whether the lock can be taken within `wait` seconds (taken and let go at once, as `flock LOCK true`)."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOCTTY | os.O_CREAT, 0o666)
    except OSError:
        return False
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)
    finally:
        os.close(fd)


def read(path):
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return None


def holders():
    """Every process with the lock file open."""
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == lock:
                    found.add(int(pid))
                    break
            except OSError:
                pass
    return sorted(found)


def session_of(pid):
    """"PID NAME" of the sshd session process `pid` descends from (or is), or ""."""
    for _ in range(64):
        if pid <= 1:
            return ""
        comm = read(f"/proc/{pid}/comm")
        stat = read(f"/proc/{pid}/stat")
        if comm is None:
            return ""
        name = comm.rstrip("\n")
        if name in sessions:
            return f"{pid} {name}"
        try:
            pid = int(stat.rsplit(") ", 1)[1].split()[1])
        except (AttributeError, IndexError, ValueError):
            return ""
    return ""


def kill(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def emit(result, holder="", pids=(), session=""):
    print(json.dumps({"result": result, "holder": holder, "pids": list(pids), "session": session}))
    sys.exit(0)


if free(0):
    emit("free")
try:
    with open(info, "rb") as file:
        recorded = file.read(2000)
except OSError:
    recorded = b""
holder = bytes(b for b in recorded if b > 0o37).decode(errors="replace")
pids = holders()
session = next(filter(None, map(session_of, pids)), "")
if session and not force:
    emit("connected", holder, pids, session)
kill(pids, signal.SIGTERM)
if free(5):
    emit("cleared", holder, pids, session)
kill(pids, signal.SIGKILL)
emit("cleared" if free(3) else "held", holder, pids, session)
