"""A test host's network: its own namespace, joined to this machine by a veth pair on its own /24.

Slot N owns 10.213.N.0/24: network namespace gw-tN, veth gw-hN on this machine (address .1, where its proxy
and pebble listen) and gw-cN inside (the container's address, .2).  A cluster takes a slot too: bridge gw-bN
on this machine (address .1), and for the member at .M namespace gw-tN-M, veth gw-hN-M on the bridge and
gw-cN-M inside.  A slot is claimed under a lock held for the host's (or cluster's) life, so that several runs
(several engineers, several pytest sessions) never take the same one.  There is no default route in a
namespace, on purpose: everything the container reaches outside its /24 goes through the proxy, and anything
trying to go direct fails at once instead of hanging."""

from __future__ import annotations

import fcntl
import os
import re
import socket
import subprocess
from pathlib import Path

from .common import RUN_DIR, TestHostError, locked_by_another, run

NETNS_DIR = Path("/run/netns")
SYS_NET = Path("/sys/class/net")
NET_PREFIX = "10.213"
SLOTS = range(1, 255)


def names(slot: int) -> tuple[str, str, str]:
    """(network namespace, host end of the veth, container end) of SLOT."""
    return f"gw-t{slot}", f"gw-h{slot}", f"gw-c{slot}"


def member_names(slot: int, index: int) -> tuple[str, str, str]:
    """(network namespace, veth end on the bridge, container end) of member INDEX (from 0) of cluster SLOT,
    named after the last number of its address."""
    octet = index + 2
    return f"gw-t{slot}-{octet}", f"gw-h{slot}-{octet}", f"gw-c{slot}-{octet}"


def member_address(slot: int, index: int) -> str:
    """The address of member INDEX (from 0) of cluster SLOT: .2, .3, ... (.1 is this machine's)."""
    return f"{NET_PREFIX}.{slot}.{index + 2}"


def bridge_name(slot: int) -> str:
    return f"gw-b{slot}"


def addresses(slot: int) -> tuple[str, str]:
    """(gateway: this machine's end, address: the container's) of SLOT."""
    return f"{NET_PREFIX}.{slot}.1", f"{NET_PREFIX}.{slot}.2"


def subnet(slot: int) -> str:
    return f"{NET_PREFIX}.{slot}.0/24"


def host_addresses() -> str:
    return run(["ip", "-o", "addr", "show"]).stdout


def in_use(slot: int, addresses_shown: str) -> bool:
    """Whether something on this machine already has SLOT's namespace, link or addresses."""
    netns, link, _ = names(slot)
    return ((NETNS_DIR / netns).exists() or (SYS_NET / link).exists() or (SYS_NET / bridge_name(slot)).exists()
            or any(NETNS_DIR.glob(f"{netns}-*")) or f" {NET_PREFIX}.{slot}." in addresses_shown)


def _slot_lock(slot: int) -> Path:
    return RUN_DIR / f"slot-{slot}.lock"


def claim(slot: int) -> int | None:
    """Take SLOT's lock (an open fd, to keep for the host's life), or None if a live process holds it."""
    fd = os.open(_slot_lock(slot), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # held by a live host whose netns is already gone (being stopped)
        os.close(fd)
        return None
    return fd


def slot_free(slot: int) -> bool:
    """Not being set up or used right now by a live process."""
    return not locked_by_another(_slot_lock(slot), lock=fcntl.flock, create=True)


def create(slot: int) -> None:
    """The namespace of SLOT and the veth pair joining it to this machine, addresses set, links up."""
    netns, link, peer = names(slot)
    gw, addr = addresses(slot)
    _namespace(netns, link, peer, addr)
    run(["ip", "addr", "add", f"{gw}/24", "dev", link])
    run(["ip", "link", "set", link, "up"])


def create_bridge(slot: int) -> None:
    """The bridge of cluster SLOT, with this machine's address (.1) on it."""
    bridge = bridge_name(slot)
    run(["ip", "link", "add", bridge, "type", "bridge"])
    run(["ip", "addr", "add", f"{addresses(slot)[0]}/24", "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])


def create_member(slot: int, index: int) -> None:
    """The namespace of member INDEX of cluster SLOT, its veth's other end on the cluster's bridge."""
    netns, link, peer = member_names(slot, index)
    _namespace(netns, link, peer, member_address(slot, index))
    run(["ip", "link", "set", link, "master", bridge_name(slot), "up"])


def _namespace(netns: str, link: str, peer: str, address: str) -> None:
    """Namespace NETNS, and a veth pair: LINK stays on this machine, PEER moves in with ADDRESS; inside up."""
    run(["ip", "netns", "add", netns])
    run(["ip", "link", "add", link, "type", "veth", "peer", "name", peer])
    run(["ip", "link", "set", peer, "netns", netns])
    run(["ip", "-n", netns, "addr", "add", f"{address}/24", "dev", peer])
    run(["ip", "-n", netns, "link", "set", peer, "up"])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])


def remove(link: str | None, netns: str | None) -> None:
    """Delete LINK (a veth, or a cluster's bridge) and the namespace NETNS, those of them that still exist."""
    if link and (SYS_NET / link).exists():
        subprocess.run(["ip", "link", "del", link], capture_output=True)
    if netns and (NETNS_DIR / netns).exists():
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def reap_orphans(netnses: set, links: set) -> None:
    """Our namespaces and links that no recorded host claims and no live process is setting up."""
    for path in NETNS_DIR.glob("gw-t*") if NETNS_DIR.is_dir() else []:
        m = re.fullmatch(r"gw-t(\d+)(-\d+)?", path.name)
        if m and path.name not in netnses and slot_free(int(m.group(1))):
            subprocess.run(["ip", "netns", "del", path.name], capture_output=True)
    for path in SYS_NET.glob("gw-*"):  # veths (gw-hN, gw-hN-M) and bridges (gw-bN)
        m = re.fullmatch(r"gw-h(\d+)(-\d+)?|gw-b(\d+)", path.name)
        if m and path.name not in links and slot_free(int(m.group(1) or m.group(3))):
            subprocess.run(["ip", "link", "del", path.name], capture_output=True)


def free_port(ip: str, ports) -> int:
    """The first port of PORTS we can bind on IP (a wildcard listener elsewhere would block it)."""
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((ip, port))
                return port
            except OSError:
                continue
    raise TestHostError(f"no free port for the proxy on {ip} in {ports.start}-{ports.stop - 1}")
