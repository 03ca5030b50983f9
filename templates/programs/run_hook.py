"""Run one release hook (app.hooks) on the server, as root: the hook's own command runs in the transient
systemd unit `argv` starts (systemd-run --wait, sandboxed, as the build or app user, bounded by RuntimeMaxSec=);
this program only collects its output and reads back from systemd how it ended.

Input (JSON): {"argv": the systemd-run command, "unit": its unit's name, "key": the report key, "lines": how many
of the last output lines to report}.
Prints one report line: {KEY: {"status": systemd-run's exit status, "seconds": how long it ran, "output": its
last lines (stdout and stderr as they came), "lines": how many it printed, and when it failed, "result":
systemd's Result= of the unit (exit-code, timeout, signal, ...) and "exit_status": ExecMainStatus=}}.
Exits 0 when the hook succeeded, 1 when not. A SIGHUP, SIGINT or SIGTERM (the deploy's connection gone) stops
the hook's unit before this program ends: no hook is left running.
"""

import collections
import json
import signal
import subprocess
import sys
import time

args = json.load(sys.stdin)
unit = args["unit"]


def stop(signum, frame):
    subprocess.run(["systemctl", "stop", unit], capture_output=True)
    subprocess.run(["systemctl", "reset-failed", unit], capture_output=True)
    sys.exit(128 + signum)


for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, stop)

started = time.monotonic()
process = subprocess.Popen(args["argv"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
tail, count = collections.deque(maxlen=args["lines"]), 0
for raw in process.stdout:
    tail.append(raw[:2000].decode(errors="replace").rstrip("\r\n"))  # a line, not a megabyte of one
    count += 1
status = process.wait()
result = {"status": status, "seconds": round(time.monotonic() - started, 1), "output": list(tail), "lines": count}
if status != 0:
    # Without --collect a failed unit stays loaded: systemd says how it ended (a timeout is "timeout").
    shown = subprocess.run(["systemctl", "show", "-p", "Result", "-p", "ExecMainStatus", unit],
                           capture_output=True, text=True).stdout
    props = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    result.update(result=props.get("Result", ""), exit_status=props.get("ExecMainStatus", ""))
    subprocess.run(["systemctl", "reset-failed", unit], capture_output=True)
print("@gangway " + json.dumps({args["key"]: result}), flush=True)
sys.exit(0 if status == 0 else 1)
