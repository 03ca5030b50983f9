"""PostgreSQL: Debian's server, reachable only through its local socket, with a role and a database for the app.

The role has the app user's name, so peer authentication (Debian's default for local connections) logs the
app in by its Unix identity: no password exists, so none can leak. With listen_addresses empty the server
opens no TCP port at all, so nobody reaches it over the network.

With `database.url` the database is someone else's (a managed PostgreSQL, say): no server here, only what the
app's clients need to reach it, the CA its certificate is checked against and the password in the app user's
passfile, and a connection made through them.
"""

from __future__ import annotations

import os

from . import Server
from ..commands import database as client
from ..commands.shell import as_user, q
from ..inventory import InventoryError
from ..facts.steps import Absent, Change, Check, File, Probe, Step, path_probe


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
    if server.inventory.database:
        return remote_database(server)
    app = server.inventory.app.name
    return Step("postgresql", [Check(state_probe(app), changes(app))],
                note=f"database {app}, peer auth over the socket, no TCP")


class PasswordError(InventoryError):
    """The database password in the operator's environment cannot be written to a passfile."""


def passfile(password: str) -> str:
    """A libpq passfile that gives `password` for any host, port, database and user: the file is the app's,
    for its one database. `:` and `\\` are escaped, as libpq reads them; a line break cannot be written."""
    if "\n" in password or "\r" in password or "\0" in password:
        raise PasswordError("has a line break or NUL in it, which a libpq passfile cannot hold")
    return "*:*:*:*:" + password.replace("\\", "\\\\").replace(":", "\\:") + "\n"


def remote_database(server: Server) -> Step:
    inventory, layout, app = server.inventory, server.layout, server.inventory.app.name
    database, db = inventory.database, client.client(inventory)
    password = os.environ.get(database.password_env)
    ops = [File(layout.database_ca, database.ca_bundle.read_bytes(), mode="644") if database.ca_bundle
           else Absent(layout.database_ca, "no database.ca_bundle: the system CA store is used")]
    if password is not None:
        try:
            ops.append(File(layout.database_passfile, passfile(password), mode="600", owner=app, group=app,
                            secret=True))
        except PasswordError as error:
            raise PasswordError(f"the password in {database.password_env} {error}; change it on the database "
                                f"and give the new one") from None
    probe = client.reach_probe(db)
    connect = db.command("psql", "-X", "-q", "-t", "-A", "-c", "select 1")

    def check(reached: dict, facts) -> list[Change]:
        # Reached already: nothing to do. Not reached: trying again makes the step fail with libpq's own words,
        # unless a new passfile or CA comes first (then `validate` tries with them).
        return [] if reached["ok"] else [Change("connection to the database", (connect,))]

    def note(facts) -> str:
        stored = facts[f"path:{layout.database_passfile}"]
        if password is not None:
            kept = f"password from {database.password_env} in {layout.database_passfile}"
        elif stored is None:
            kept = f"no password on the server ({database.password_env} is not set)"
        else:
            kept = f"password kept in {layout.database_passfile} ({database.password_env} is not set)"
        reached = facts[probe.key]
        return (f"connected as {reached['said']}" if reached["ok"] else f"not connected: {reached['said']}") + f"; {kept}"

    return Step("database", [*ops, Check(probe, check)], validate=connect, note=note,
                extra_probes=[path_probe(layout.database_passfile)],
                changed_note=("password from " + database.password_env if password is not None
                              else f"{database.password_env} is not set: the password on the server is kept")
                + "; a connection was made with it",
                hint=f"The password is read from {database.password_env} in your environment when you run "
                     "`fab provision`; check it, the URL's user and host, and that the database lets this server in.")
