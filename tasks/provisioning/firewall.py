"""The firewall: nftables, only SSH, HTTP and HTTPS in; on the db host of several servers, PostgreSQL's port
from the app hosts' addresses alone.

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


def ruleset(ssh_port: int, database_clients: list[str] = ()) -> str:
    """The rules; `database_clients`: the addresses PostgreSQL's port is open to (each must be an IP address:
    anything else is refused here, not written)."""
    clients = sorted(dict.fromkeys(ip(a) for a in database_clients), key=str)
    return render("firewall/nftables.conf.j2", ssh_port=ssh_port, ports=sorted({ssh_port, 80, 443}),
                  database_port=defaults.POSTGRES_PORT,
                  database_v4=[str(a) for a in clients if a.version == 4],
                  database_v6=[str(a) for a in clients if a.version == 6])


def database_clients(server: Server) -> list[str]:
    """Who may reach PostgreSQL here: the app hosts, when this is the db host of several servers."""
    if not (server.inventory.several_servers and server.has("db")):
        return []
    return [host.peer_address for host in server.inventory.app_hosts]


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
    port, clients = server.host.port, database_clients(server)
    return Step("firewall", [
        File(RULES, ruleset(port, clients), mode="755"),
        Check(LIVE, _live_changes),
    ], validate=f"nft -c -f {RULES}", after=[f"nft -f {RULES}"], confirm=server.prove_deploy_login,
        undo="nft delete table inet filter", note=f"open: {', '.join(map(str, sorted({port, 80, 443})))}/tcp"
        + (f"; {defaults.POSTGRES_PORT}/tcp from {', '.join(clients)} only" if clients else ""))
