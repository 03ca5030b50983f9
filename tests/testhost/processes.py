"""The processes a test host runs on this machine: its container's systemd-nspawn and its helpers
(tinyproxy, pebble, pebble-challtestsrv; a cluster's members share one set).  Each is recorded by PID, start
time and command line, and only ever signalled while /proc still shows that very process: a PID reused by
something else is left alone."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from .common import TestHostError, run, tail
from .network import free_port

if TYPE_CHECKING:
    from .cluster import Cluster
    from .host import TestHost

PROXY_PORTS = range(8888, 8900)  # 8888 unless something already holds it on our address
PEBBLE_PORT, PEBBLE_MGMT_PORT, CHALL_DNS_PORT, CHALL_MGMT_PORT = 14000, 15000, 8053, 8055
HELPERS = ("pebble", "challtestsrv", "tinyproxy")  # in the order they are stopped

# Bounded waits, in seconds.
SERVICE_READY_TIMEOUT = 30
NSPAWN_STOP_TIMEOUT = 30
PROCESS_STOP_TIMEOUT = 5


# ---------------------------------------------------------------------------------------------
# Which process is ours: identity checks before we signal anything


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of PID, or None if there is no such process."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def proc_argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


def record(pid: int, argv: list[str] | None = None) -> dict:
    stat = proc_stat(pid)
    return {"pid": pid, "start": stat[2] if stat else None, "argv": argv}


def alive(rec: dict | None) -> bool:
    """Is the process of REC still the one we recorded (same start time and command line)?"""
    if not rec or not rec.get("pid"):
        return False
    stat = proc_stat(rec["pid"])
    if stat is None or stat[0] in "ZX" or stat[2] != rec.get("start"):
        return False
    return rec.get("argv") is None or proc_argv(rec["pid"]) == rec["argv"]


def children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat and stat[1] == pid:
                kids.append(int(entry.name))
    return kids


def wait_gone(rec: dict, popen: subprocess.Popen | None, timeout: float) -> bool:
    if popen is not None:
        try:
            popen.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while alive(rec):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def send_signal(rec: dict, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(rec["pid"], signum)


def terminate(rec: dict, popen: subprocess.Popen | None, timeout: float = PROCESS_STOP_TIMEOUT) -> bool:
    """SIGTERM, then SIGKILL after TIMEOUT; True if it went on SIGTERM."""
    if not alive(rec):
        if popen is not None:
            popen.poll()
        return True
    send_signal(rec, signal.SIGTERM)
    if wait_gone(rec, popen, timeout):
        return True
    if alive(rec):
        send_signal(rec, signal.SIGKILL)
    wait_gone(rec, popen, 5)
    return False


def spawn(argv: list[str], logfile: Path, env: dict | None = None) -> subprocess.Popen:
    with open(logfile, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, **(env or {})})


def spawn_helper(host: TestHost, role: str, argv: list[str], env: dict | None = None) -> None:
    """Start one of HOST's processes as ROLE (its log: ROLE.log in the runtime dir) and record it at once,
    so that a teardown or a later run's reaper finds it even if this run dies on the next line."""
    from .state import write_state  # here: state.py imports this module

    st = host._state
    popen = spawn(argv, Path(st["runtime_dir"]) / f"{role}.log", env)
    host._procs[role] = popen
    st["procs"][role] = record(popen.pid, argv)
    write_state(st)


def start_helpers(host: TestHost | Cluster, answer: str) -> None:
    """Start, next to HOST (or a cluster), on its gateway address: tinyproxy (the targets' only way out) and
    pebble with pebble-challtestsrv as its DNS (every name resolves to ANSWER unless set_dns says otherwise);
    wait until they answer and save pebble's roots, which change at every start."""
    st, gw = host._state, host.gateway
    rundir = Path(st["runtime_dir"])

    port = free_port(gw, PROXY_PORTS)
    host.proxy_url = f"http://{gw}:{port}"
    (rundir / "tinyproxy.conf").write_text(
        f"User nobody\nGroup nogroup\nPort {port}\nListen {gw}\nTimeout 600\nMaxClients 100\n"
        f"Allow {gw.rsplit('.', 1)[0]}.0/24\nConnectPort 443\nConnectPort 80\nLogLevel Notice\n")
    spawn_helper(host, "tinyproxy", ["tinyproxy", "-d", "-c", str(rundir / "tinyproxy.conf")])

    pebble_tls(rundir, gw)
    (rundir / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"{gw}:{PEBBLE_PORT}", "managementListenAddress": f"{gw}:{PEBBLE_MGMT_PORT}",
        "certificate": str(rundir / "pebble-cert.pem"), "privateKey": str(rundir / "pebble-key.pem"),
        "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": False,
    }}, indent=1))
    spawn_helper(host, "challtestsrv", ["pebble-challtestsrv", "-defaultIPv4", answer, "-defaultIPv6", "",
                                        "-dns01", f"{gw}:{CHALL_DNS_PORT}", "-http01", "", "-https01", "",
                                        "-tlsalpn01", "", "-management", f"{gw}:{CHALL_MGMT_PORT}"])
    spawn_helper(host, "pebble", ["pebble", "-config", str(rundir / "pebble.json"),
                                  "-dnsserver", f"{gw}:{CHALL_DNS_PORT}"],
                 {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"})

    wait_port(host, "tinyproxy", gw, port)
    wait_port(host, "challtestsrv", gw, CHALL_MGMT_PORT)
    fetch_acme_roots(host)


def set_dns(gateway: str, name: str, address: str) -> None:
    """Make the pebble-challtestsrv on GATEWAY answer NAME with ADDRESS (its management API)."""
    body = json.dumps({"host": name, "addresses": [address]}).encode()
    request = urllib.request.Request(f"http://{gateway}:{CHALL_MGMT_PORT}/add-a", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass  # a refusal raises HTTPError


def stop_helpers(state: dict, procs: dict) -> None:
    """Stop the helper processes STATE records (those still the very processes we started)."""
    recs = state.get("procs", {})
    for role in HELPERS:
        if recs.get(role):
            terminate(recs[role], procs.get(role))


# ---------------------------------------------------------------------------------------------
# Waiting for a host's processes to answer


def check_running(host: TestHost, role: str) -> None:
    popen = host._procs.get(role)
    if popen is not None and popen.poll() is not None:
        logfile = Path(host._state["runtime_dir"]) / f"{role}.log"
        raise TestHostError(f"{host.name}: {role} exited ({popen.returncode}); " + tail(logfile))


def timeout_error(host: TestHost, role: str, what: str, timeout: float) -> TestHostError:
    logfile = Path(host._state["runtime_dir"]) / f"{role}.log"
    return TestHostError(f"{host.name}: {what} not within {timeout} s; " + tail(logfile))


def poll(host: TestHost, role: str, what: str, timeout: float, ready, errors=(OSError,),
          interval: float = 0.2) -> None:
    """Call READY until it returns True, failing at once if ROLE's process has exited. Not ready yet, it
    returns a reason (or None: no news) or raises one of ERRORS; past TIMEOUT seconds, a TestHostError says
    that WHAT did not happen, with the last reason."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        check_running(host, role)
        try:
            answer = ready()
            if answer is True:
                return
            if answer is not None:
                last = answer
        except errors as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise timeout_error(host, role, f"{what} ({last})" if last else what, timeout)
        time.sleep(interval)


def wait_port(host: TestHost, role: str, ip: str, port: int, timeout: float = SERVICE_READY_TIMEOUT) -> None:
    def listening() -> bool:
        with socket.create_connection((ip, port), timeout=1):
            return True

    poll(host, role, f"{role} listening on {ip}:{port}", timeout, listening, interval=0.1)


# ---------------------------------------------------------------------------------------------
# The helpers' addresses and files


def pebble_tls(rundir: Path, ip: str) -> None:
    """A small CA (what ACME clients trust: acme_ca_bundle) and pebble's listener cert for IP."""
    ca_key, ca, key, csr, cert = (rundir / n for n in ("pebble-ca.key", "pebble-ca.pem", "pebble-key.pem",
                                                       "pebble.csr", "pebble-cert.pem"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(["openssl", "req", "-x509", *ec, "-days", "30", "-subj", "/CN=gangway testhost pebble CA",
          "-keyout", str(ca_key), "-out", str(ca),
          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    run(["openssl", "req", *ec, "-subj", f"/CN={ip}", "-keyout", str(key), "-out", str(csr)])
    ext = rundir / "pebble-cert.ext"
    ext.write_text(f"basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   f"extendedKeyUsage=serverAuth\nsubjectAltName=IP:{ip}\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
          "-CAcreateserial", "-days", "30", "-extfile", str(ext), "-out", str(cert)])


def fetch_acme_roots(host: TestHost, timeout: float = SERVICE_READY_TIMEOUT) -> None:
    """Wait for pebble's directory, then save its (per-start) root and intermediate."""
    context = ssl.create_default_context(cafile=str(host.acme_ca_bundle))
    mgmt = f"https://{host.gateway}:{PEBBLE_MGMT_PORT}"

    def get(url: str) -> bytes:
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return response.read()

    def answering() -> bool | None:
        return True if "newAccount" in json.loads(get(host.acme_directory)) else None

    poll(host, "pebble", f"pebble answering at {host.acme_directory}", timeout, answering, (OSError, ValueError))
    pems = [get(f"{mgmt}/roots/0"), get(f"{mgmt}/intermediates/0")]
    host.acme_root.write_bytes(b"".join(p if p.endswith(b"\n") else p + b"\n" for p in pems))
