"""The firewall: nftables, only SSH, HTTP and HTTPS in; behind a load balancer, HTTP from it alone; on the db
host of several servers, PostgreSQL's port from the app hosts alone.

The rules are one file loaded in one transaction (the SSH rule can't lag behind the drop policy), checked
with `nft -c` first, and confirmed afterwards by opening a new SSH connection; if that fails the table is
removed again, so a mistake cannot lock the operator out. Only gangway's own table is replaced: fail2ban's
bans and other tools' tables survive a firewall change.
"""

from __future__ import annotations


from . import Server
from .. import defaults
from ..inventory import ip
from ..commands.render import render
from ..facts.steps import Change, Check, File, Probe, Step

RULES = "/etc/nftables.conf"


def ruleset(ssh_port: int, public: tuple[int, ...] = (80, 443), peers: tuple[tuple[str, int], ...] = ()) -> str:
    """SSH and the `public` ports from anywhere; each (address, port) of `peers` from that address alone (each
    must be an IP address: anything else is refused here, not written)."""
    checked = [(ip(address), port) for address, port in peers]
    return render("firewall/nftables.conf.j2", ssh_port=ssh_port, ports=sorted({ssh_port, *public}),
                  peers=[("ip6" if address.version == 6 else "ip", str(address), port)
                         for address, port in sorted(dict.fromkeys(checked), key=lambda p: (p[1], str(p[0])))])


def openings(server: Server) -> tuple[tuple[int, ...], tuple[tuple[str, int], ...]]:
    """(the ports open to all, the (address, port) open to one server): the web to the site's front (the load
    balancer, else each web host); a web host behind the load balancer takes HTTP from it alone; the db host of
    several servers takes PostgreSQL from the app hosts alone."""
    inventory, host = server.inventory, server.host
    lb = inventory.lb_in_front_of(host)
    peers = ((lb.peer_address, 80),) if lb else ()
    if inventory.several_servers and server.has("db"):
        peers += tuple((app.peer_address, defaults.POSTGRES_PORT) for app in inventory.app_hosts)
    return (80, 443) if inventory.fronts_site(host) else (), peers


def parse_live(out: str, rc: int) -> dict:
    return {"loaded": "policy drop" in out, "enabled": out.strip().endswith("enabled")}


LIVE = Probe("nftables-live", "nft list chain inet filter input; systemctl is-enabled nftables", parse_live)


def _live_changes(state: dict, facts) -> list[Change]:
    out = []
    if not state["loaded"]:
        out.append(Change("rules loaded", ()))  # `after` loads them
    if not state["enabled"]:
        out.append(Change("loaded at boot", ("systemctl enable nftables",)))
    return out


def rules(server: Server) -> Step:
    port = server.host.port
    public, peers = openings(server)
    only = "".join(f"; {peer_port}/tcp from {address} only" for address, peer_port in peers)
    return Step("firewall", [
        File(RULES, ruleset(port, public, peers), mode="755"),
        Check(LIVE, _live_changes),
    ], validate=f"nft -c -f {RULES}", after=[f"nft -f {RULES}"], confirm=server.prove_deploy_login,
        undo="nft delete table inet filter", note=f"open: {', '.join(map(str, sorted({port, *public})))}/tcp{only}")
