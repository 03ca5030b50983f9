"""What the harness records of each test host, and tearing down what dead runs left behind.

Everything a host holds (its slot, namespace, link, processes, runtime dir, disk) is recorded in
/run/gangway-testhost/NAME.json before it is made, under a lock, so that a later run can tear down what a dead
one left (``reap_stale``): a host is stale when its owner (the process that started it, or its container's
nspawn once ``up`` detached it) is gone.  A cluster is recorded the same way (its link is its bridge, its
processes the shared helpers, its owner their tinyproxy once detached) and lists its members, each recorded
as a host: tearing the cluster down takes them too.  Things of ours that no record claims (a run killed
between making and recording them) are found by their names and command lines."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

from . import network
from .common import RUN_DIR, STATE_LOCK, SUITES, flock, in_parallel, log, require_host
from .image import HOSTS_DIR, IMAGES_DIR, remove_copy, remove_dead_builds, remove_ephemeral_copies
from .processes import (NSPAWN_STOP_TIMEOUT, PROCESS_STOP_TIMEOUT, alive, children, proc_argv, record,
                        send_signal, stop_helpers, terminate, wait_gone)


def state_path(name: str) -> Path:
    return RUN_DIR / f"{name}.json"


def write_state(state: dict) -> None:
    path = state_path(state["name"])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, path)


def read_state(name: str) -> dict | None:
    try:
        return json.loads(state_path(name).read_text())
    except (OSError, ValueError):
        return None


def load_states() -> list[dict]:
    states = []
    for path in sorted(RUN_DIR.glob("*.json")):
        try:
            states.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return states


def owner_alive(state: dict) -> bool:
    return alive(state.get("owner"))


# ---------------------------------------------------------------------------------------------
# Tearing down, and reaping what dead runs left


def teardown(state: dict, procs: dict | None = None) -> None:
    """Remove everything STATE records (a cluster's: its members first); skip what is already gone.
    Processes are signalled only while /proc still shows the very process we started."""
    in_parallel(teardown, [m for m in map(read_state, state.get("members", ())) if m is not None])
    procs = procs or {}
    recs = state.get("procs", {})
    nspawn = recs.get("nspawn")
    leader = state.get("leader")
    if nspawn and alive(nspawn):
        if not alive(leader):
            kids = children(nspawn["pid"])
            leader = record(kids[0]) if kids else None
        # SIGTERM makes nspawn power the container off; it removes its ephemeral copy on exit.
        if not terminate(nspawn, procs.get("nspawn"), NSPAWN_STOP_TIMEOUT):
            log.warning("%s: systemd-nspawn did not stop within %s s; killed", state["name"],
                        NSPAWN_STOP_TIMEOUT)
    elif procs.get("nspawn") is not None:
        procs["nspawn"].poll()
    if alive(leader):  # the container outlived its nspawn: killing its PID 1 ends them all
        send_signal(leader, signal.SIGKILL)
        wait_gone(leader, None, 5)
    stop_helpers(state, procs)

    network.remove(state.get("link"), state.get("netns"))
    if state.get("image"):  # nspawn leaves its copy behind when killed, or stopped while copying
        remove_ephemeral_copies(Path(state["image"]))
    if state.get("copy"):  # a persistent host's disk
        remove_copy(Path(state["copy"]))

    if state.get("runtime_dir"):
        shutil.rmtree(state["runtime_dir"], ignore_errors=True)
    state_path(state["name"]).unlink(missing_ok=True)


def reap_stale() -> None:
    """Tear down leftovers of earlier runs that died: hosts whose owner process is gone, and our
    namespaces, links, processes, runtime dirs and image copies that no live host claims."""
    require_host(("ip",))
    with flock(STATE_LOCK):
        for state in load_states():
            if not owner_alive(state):
                log.info("reaping stale test host %s (owner %s gone)", state["name"], state["owner"]["pid"])
                teardown(state)
        reap_orphans(load_states())
        remove_dead_builds()


def reap_orphans(states: list[dict]) -> None:
    """Our things that no state file claims (a run killed between creating and recording them)."""
    names = {s["name"] for s in states}
    netnses = {s.get("netns") for s in states}
    links = {s.get("link") for s in states}
    slots = {s.get("slot") for s in states}

    rundir = re.escape(str(RUN_DIR))
    signatures = [  # command lines only we start, and the slot or name they belong to
        (r"systemd-nspawn\0.*--network-namespace-path=/run/netns/gw-t(\d+)(?:-\d+)?\0", "slot"),
        (rf"tinyproxy\0-d\0-c\0{rundir}/([^/\0]+)/tinyproxy\.conf\0", "name"),
        (rf"pebble\0-config\0{rundir}/([^/\0]+)/pebble\.json\0", "name"),
        (rf"pebble-challtestsrv\0.*-management\0{re.escape(network.NET_PREFIX)}\.(\d+)\.1:\d+\0", "slot"),
    ]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        cmdline = "\0".join(proc_argv(pid)) + "\0"
        for pattern, kind in signatures:
            m = re.match(pattern, cmdline)
            if not m:
                continue
            key = int(m.group(1)) if kind == "slot" else m.group(1)
            if (key in slots if kind == "slot" else key in names) or (kind == "slot" and not network.slot_free(key)):
                break
            rec = record(pid, proc_argv(pid))
            log.info("stopping orphan process %s: %s", pid, " ".join(rec["argv"]))
            terminate(rec, None, NSPAWN_STOP_TIMEOUT if "nspawn" in pattern else PROCESS_STOP_TIMEOUT)
            break

    network.reap_orphans(netnses, links)
    for path in RUN_DIR.iterdir():
        if path.is_dir() and path.name not in names:
            shutil.rmtree(path, ignore_errors=True)
    for image in {IMAGES_DIR / s for s in SUITES} | {Path(s["image"]) for s in states if s.get("image")}:
        remove_ephemeral_copies(image)
    copies = {s.get("copy") for s in states}  # recorded before they are made: any other is an orphan
    for copy in HOSTS_DIR.iterdir() if HOSTS_DIR.is_dir() else []:
        if copy.is_dir() and str(copy) not in copies:
            log.info("removing leftover disk of a persistent test host %s", copy)
            remove_copy(copy)
