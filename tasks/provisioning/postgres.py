"""PostgreSQL: Debian's server, reachable only through its local socket, with a role and a database for the app.

The role has the app user's name, so peer authentication (Debian's default for local connections) logs the
app in by its Unix identity: no password exists, so none can leak. With listen_addresses empty the server
opens no TCP port at all, so nobody reaches it over the network.
"""

from __future__ import annotations

from . import Server
from ..commands.shell import as_user, q
from ..facts.steps import Change, Check, Probe, Step


def parse_state(out: str, rc: int) -> dict | None:
    if rc != 0 or out.count("|") != 2:
        return None
    listen, role, database = out.strip().split("|")
    return {"listen": listen, "role": role == "1", "database": database == "1"}


def psql(sql: str) -> str:
    return as_user("postgres", f"psql -X -q -t -A -c {q(sql)}")


def state_probe(app: str) -> Probe:
    lit = app.replace("'", "''")
    sql = (f"select current_setting('listen_addresses') || '|' || "
           f"(select count(*) from pg_roles where rolname = '{lit}') || '|' || "
           f"(select count(*) from pg_database where datname = '{lit}')")
    return Probe("postgres", f"cd / && {psql(sql)}", parse_state)


def changes(app: str):
    def decide(state: dict | None, facts) -> list[Change]:
        if state is None:  # not running: start it, then do everything (each command is safe to repeat)
            state = {"listen": "?", "role": False, "database": False}
            out = [Change("postgresql started", ("systemctl start postgresql",))]
        else:
            out = []
        if state["listen"] != "":
            out.append(Change("listening on its socket only", (
                "cd / && " + psql("ALTER SYSTEM SET listen_addresses = ''"),
                "systemctl restart postgresql")))
        if not state["role"]:
            out.append(Change(f"role {app}", ("cd / && " + as_user("postgres", f"createuser {q(app)}"),)))
        if not state["database"]:
            out.append(Change(f"database {app}", (
                "cd / && " + as_user("postgres", f"createdb --owner {q(app)} {q(app)}"),)))
        return out
    return decide


def database(server: Server) -> Step:
    app = server.inventory.app.name
    return Step("postgresql", [Check(state_probe(app), changes(app))],
                note=f"database {app}, peer auth over the socket, no TCP")
