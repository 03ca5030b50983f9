"""The base system: package sources, packages, automatic security updates, time, swap, the host name."""

from __future__ import annotations

from .. import defaults
from . import Server
from ..inventory import HOOK_POINTS
from ..commands.render import render
from ..commands.shell import q, write_file
from ..facts.steps import Absent, Change, Check, File, Packages, Probe, Step

APT_PROXY = "/etc/apt/apt.conf.d/80gangway-proxy"
AUTO_UPGRADES = "/etc/apt/apt.conf.d/20auto-upgrades"
SWAPFILE = "/swapfile"


def apt_proxy(server: Server) -> Step:
    proxy = server.inventory.proxy
    if proxy:
        # secret: a proxy URL may carry a user name and password.
        op = File(APT_PROXY, render("apt/proxy.conf.j2", url=proxy.url), secret=True)
    else:
        op = Absent(APT_PROXY, "no proxy in the inventory")
    return Step("apt proxy", [op], note=f"through {proxy.url}" if proxy else "direct, no proxy")


def packages(server: Server) -> Step:
    wanted = defaults.PACKAGES + database_packages(server) + hook_packages(server.inventory)
    return Step("system packages", [Packages(wanted, env=server.inventory.proxy_environment)],
                note=f"{len(wanted)} installed")


def database_packages(server) -> tuple[str, ...]:
    """PostgreSQL's server for a database on this server (a single one, or the db host of several); only its
    client (psql, pg_dump, pg_restore) for `database.url` and on the app hosts of several servers. Debian's
    client dumps servers of its own major version and older: pg_dump refuses a newer server ("server version
    mismatch"), so a managed database must not run ahead of the server's Debian."""
    return defaults.POSTGRES_SERVER if server.has("db") else defaults.POSTGRES_CLIENT


def hook_packages(inventory) -> tuple[str, ...]:
    """What the release hooks need besides: GNU gettext (msgfmt) when one runs `manage.py compilemessages`.
    Only then: a server carries no tool its app does not use."""
    commands = [hook.command for point in HOOK_POINTS for hook in inventory.app.hooks.at(point)]
    return defaults.GETTEXT if any(c[:2] == ("manage.py", "compilemessages") for c in commands) else ()


def security_updates(server: Server) -> Step:
    return Step("automatic security updates", [File(AUTO_UPGRADES, render("apt/auto-upgrades.j2"))],
                note="unattended-upgrades daily")


def _time_sync(state: str | None, facts) -> list[Change]:
    if state == "enabled":
        return []
    return [Change("systemd-timesyncd enabled", ("systemctl enable --now systemd-timesyncd",))]


def time_sync(server: Server) -> Step:
    probe = Probe("timesyncd", "systemctl is-enabled systemd-timesyncd",
                  lambda out, rc: out.strip() or None)
    return Step("time sync", [Check(probe, _time_sync)], note="systemd-timesyncd enabled")


def parse_memory(out: str, rc: int) -> dict:
    memory, swaps, virt = (out.split() + ["0", "0", "none"])[:3]
    return {"memory_mib": int(memory), "swaps": int(swaps), "container": virt != "none"}


def swap_changes(state: dict, facts) -> list[Change]:
    if state["container"] or state["swaps"] or state["memory_mib"] >= defaults.SWAP_BELOW_MIB:
        return []
    size = defaults.SWAP_SIZE_MIB
    return [Change(f"{SWAPFILE} of {size} MiB", (
        f"[ -f {SWAPFILE} ] || {{ fallocate -l {size}M {SWAPFILE} || dd if=/dev/zero of={SWAPFILE} bs=1M count={size}; }}",
        f"chmod 600 {SWAPFILE}",
        f"mkswap {SWAPFILE} >/dev/null",
        f"swapon {SWAPFILE}",
        f"grep -q '^{SWAPFILE} ' /etc/fstab || echo '{SWAPFILE} none swap sw 0 0' >> /etc/fstab",
    ))]


def _swap_note(facts) -> str:
    state = facts["memory"]
    if state["container"]:
        return "a container: swap is the host's business"
    if state["swaps"]:
        return "swap is on"
    return f"{state['memory_mib']} MiB of memory, no swap needed"


def swap(server: Server) -> Step:
    probe = Probe("memory", "echo $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) "
                            "$(swapon --noheadings --show=NAME | wc -l) "
                            "$(systemd-detect-virt --container || true)", parse_memory)
    return Step("swap", [Check(probe, swap_changes)], note=_swap_note)


def parse_hostname(out: str, rc: int) -> dict:
    lines = out.splitlines()
    rest = lines[1:]
    return {"name": lines[0].strip() if lines else "", "listed": "listed" in rest, "missing": "missing" in rest}


HOSTNAME = Probe("hostname",
                 "h=$(hostname); echo \"$h\"; if [ ! -e /etc/hosts ]; then echo missing; elif awk -v h=\"$h\" "
                 "'!/^[[:space:]]*#/ { for (i = 2; i <= NF; i++) if ($i == h) found = 1 } END { exit !found }' "
                 "/etc/hosts; then echo listed; fi", parse_hostname)


def etc_hosts(name: str) -> str:
    """Debian's /etc/hosts for a host called `name`, as its installer writes it (minimal container images
    come without one)."""
    return (f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n\n"
            "# The following lines are desirable for IPv6 capable hosts\n"
            "::1     localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n")


def _hostname_changes(state: dict, facts) -> list[Change]:
    name = state["name"]
    if state["listed"] or not name:
        return []
    if state.get("missing"):
        return [Change(f"/etc/hosts created (localhost and {name})",
                       (write_file("/etc/hosts", etc_hosts(name), "644", "root", "root"),))]
    # Debian's way: the host's own name on 127.0.1.1. Written in place (not renamed over), since /etc/hosts
    # may be a mount point; added to an existing 127.0.1.1 line rather than a second one.
    lit = q(name)
    return [Change(f"{name} added to /etc/hosts", (
        f"awk -v h={lit} '/^127\\.0\\.1\\.1[[:space:]]/ && !done {{ $0 = $0 \" \" h; done = 1 }} {{ print }} "
        f"END {{ if (!done) print \"127.0.1.1\\t\" h }}' /etc/hosts > /etc/hosts.gangway-new",
        "cat /etc/hosts.gangway-new > /etc/hosts && rm -f /etc/hosts.gangway-new"))]


def hostname(server: Server) -> Step:
    """sudo looks up the host's own name; without it in /etc/hosts every sudo says "unable to resolve host"
    (and waits for DNS first)."""
    return Step("hostname", [Check(HOSTNAME, _hostname_changes)],
                note=lambda facts: f"{facts[HOSTNAME.key]['name']} resolves locally")
