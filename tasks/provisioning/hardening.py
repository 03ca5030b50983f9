"""Hardening beyond the services: kernel settings, modules never needed, no core dumps, idle shells closed,
a login banner, services restarted after security updates, package files verified, repeated failed SSH
logins blocked. Each is a file, so a second run compares files (not live values a container may not let
us set) and changes nothing."""

from __future__ import annotations

from . import Server
from ..commands.render import render
from ..facts.steps import Change, Check, Directory, Facts, File, Probe, Step

SYSCTL = "/etc/sysctl.d/90-gangway.conf"
MODPROBE = "/etc/modprobe.d/gangway-blacklist.conf"
LIMITS = "/etc/security/limits.d/90-gangway-core.conf"
COREDUMP = "/etc/systemd/coredump.conf.d/gangway.conf"
PROFILE = "/etc/profile.d/gangway.sh"
DEBSUMS = "/etc/default/debsums"
# The pre-login banners: a notice instead of the OS and its version.
BANNERS = ("/etc/issue", "/etc/issue.net")
NEEDRESTART = "/etc/needrestart/conf.d/gangway.conf"
FAIL2BAN = "/etc/fail2ban/jail.d/gangway.conf"  # read after Debian's defaults-debian.conf

IDLE_SHELL_MINUTES = 15
# 10 failed logins within 10 minutes block the address for 10 minutes.
BAN_AFTER_FAILURES = 10
BAN_TIME = "10m"

SYSCTL_GROUPS = (
    (("Network: no ICMP redirects (they would let someone on the path reroute this server's traffic), no",
      "source-routed packets, drop packets that could not have come in on their interface (strict reverse",
      "path: one route per address, as on a server) and log the impossible ones (martians)."),
     (("net.ipv4.conf.all.accept_redirects", "0"), ("net.ipv4.conf.default.accept_redirects", "0"),
      ("net.ipv6.conf.all.accept_redirects", "0"), ("net.ipv6.conf.default.accept_redirects", "0"),
      ("net.ipv4.conf.all.send_redirects", "0"), ("net.ipv4.conf.default.send_redirects", "0"),
      ("net.ipv4.conf.all.accept_source_route", "0"), ("net.ipv4.conf.default.accept_source_route", "0"),
      ("net.ipv6.conf.all.accept_source_route", "0"), ("net.ipv6.conf.default.accept_source_route", "0"),
      ("net.ipv4.conf.all.rp_filter", "1"), ("net.ipv4.conf.default.rp_filter", "1"),
      ("net.ipv4.conf.all.log_martians", "1"), ("net.ipv4.conf.default.log_martians", "1"),
      ("net.ipv4.tcp_syncookies", "1"), ("net.ipv4.icmp_echo_ignore_broadcasts", "1"))),
    (("Files: no following another user's links or writing to their FIFOs and files in shared sticky",
      "directories like /tmp (the classic /tmp races), no core dumps of setuid programs."),
     (("fs.protected_symlinks", "1"), ("fs.protected_hardlinks", "1"), ("fs.protected_fifos", "2"),
      ("fs.protected_regular", "2"), ("fs.suid_dumpable", "0"))),
    (("Kernel: hide kernel addresses from everyone (they help exploits), no BPF for unprivileged users, no",
      "loading of TTY line disciplines on a user's request (a source of kernel bugs)."),
     (("kernel.kptr_restrict", "2"), ("kernel.unprivileged_bpf_disabled", "1"),
      ("dev.tty.ldisc_autoload", "0"))),
)
SYSCTL_KEYS = tuple(key for _, settings in SYSCTL_GROUPS for key, _ in settings)

# Rare network protocols any local user can make the kernel load, each with a history of exploitable bugs;
# removable storage and FireWire, which a server in a data centre never sees.
MODULES = ("dccp", "sctp", "rds", "tipc", "usb-storage", "firewire-core", "firewire-ohci")


def sysctl_file() -> str:
    return render("hardening/sysctl.conf.j2", groups=SYSCTL_GROUPS)


def parse_writable(out: str, rc: int) -> dict[str, bool]:
    """{key: whether this server may set it}; keys this kernel does not have are left out."""
    found = {}
    for line in out.splitlines():
        state, _, path = line.partition(" ")
        if state in ("w", "r") and path.startswith("/proc/sys/"):
            found[path[len("/proc/sys/"):].replace("/", ".")] = state == "w"
    return found


# The /proc/sys paths are worked out here, so the probe forks nothing per key: it runs on every provision.
WRITABLE = Probe("sysctl-writable", "for path in " + " ".join(f"/proc/sys/{k.replace('.', '/')}" for k in SYSCTL_KEYS)
                 + "; do if [ -w \"$path\" ]; then echo w \"$path\"; elif [ -e \"$path\" ]; then echo r \"$path\"; "
                 "fi; done", parse_writable)

# Applies each setting the kernel lets this server set, skipping the rest instead of failing on them.
APPLY = (f"sed -n 's/^-\\{{0,1\\}}\\([a-z0-9_.-]*\\) = \\(.*\\)$/\\1 \\2/p' {SYSCTL} | while read -r key value; do "
         "path=/proc/sys/$(echo \"$key\" | tr . /); if [ -w \"$path\" ]; then sysctl -q -w \"$key=$value\"; fi; done")


def _kernel_note(facts: Facts) -> str:
    writable = facts[WRITABLE.key]
    settable = sum(writable.values())
    others = len(writable) - settable
    where = f" (the other {others} are the container host's to set)" if others else ""
    return f"{settable} of {len(writable)} kernel settings apply here{where}; {len(MODULES)} unused modules blocked"


def kernel(server: Server) -> Step:
    return Step("kernel hardening", [
        File(SYSCTL, sysctl_file()),
        Directory("/etc/modprobe.d"),
        File(MODPROBE, render("hardening/modprobe.conf.j2", modules=MODULES)),
    ], extra_probes=[WRITABLE], after=[APPLY], note=_kernel_note)


def login_limits(server: Server) -> Step:
    return Step("login limits", [
        File(LIMITS, render("hardening/limits.conf.j2")),
        Directory("/etc/systemd/coredump.conf.d"),
        File(COREDUMP, render("hardening/coredump.conf.j2")),
        File(PROFILE, render("hardening/profile.sh.j2", minutes=IDLE_SHELL_MINUTES)),
        *(File(path, render("hardening/issue.j2")) for path in BANNERS),
    ], note=f"no core dumps; idle shells end after {IDLE_SHELL_MINUTES} min")


def packages(server: Server) -> Step:
    return Step("package integrity", [
        Directory("/etc/needrestart/conf.d"),
        File(NEEDRESTART, render("hardening/needrestart.conf.j2")),
        File(DEBSUMS, render("hardening/debsums.j2")),
    ], note="services restarted after library updates; package files verified weekly")


def _fail2ban_running(state: str | None, facts: Facts) -> list[Change]:
    if state == "enabled active":
        return []
    return [Change("fail2ban started", ("systemctl enable fail2ban",))]  # `after` (re)starts it


def login_guard(server: Server) -> Step:
    probe = Probe("fail2ban", "echo $(systemctl is-enabled fail2ban) $(systemctl is-active fail2ban)",
                  lambda out, rc: out.strip())
    return Step("ssh login guard", [
        File(FAIL2BAN, render("hardening/fail2ban.conf.j2", maxretry=BAN_AFTER_FAILURES, bantime=BAN_TIME,
                              ssh_port=server.host.port)),
        Check(probe, _fail2ban_running),
    ], validate="fail2ban-client -t", after=["systemctl restart fail2ban"],
        note=f"fail2ban: {BAN_AFTER_FAILURES} failed SSH logins block an address for {BAN_TIME}")
