"""PostgreSQL: Debian's server, reachable only through its local socket, with a role and a database for the app.

The role has the app user's name, so peer authentication (Debian's default for local connections) logs the
app in by its Unix identity: no password exists, so none can leak. With listen_addresses empty the server
opens no TCP port at all, so nobody reaches it over the network.

With `database.url` the database is someone else's (a managed PostgreSQL, say): no server here, only what the
app's clients need to reach it, the CA its certificate is checked against and the password in the app user's
passfile, and a connection made through them.

With several servers (README, "Several servers") the db host's PostgreSQL listens on its private address (and
its socket) only, speaks TLS with a certificate signed by a CA gangway makes there once, and its pg_hba admits
the app's role to the app's database from each app host's address alone, over TLS (hostssl) with
scram-sha-256; the role's password is made once on the db host. The app hosts are clients, as with
`database.url`, given the db host's CA and password by `fab provision` (`DatabaseLink`, read by `link_probe`).
"""

from __future__ import annotations

import os

from . import DatabaseLink, Server
from .. import defaults
from ..commands import database as client, programs
from ..commands.shell import as_user, parse_reports, q
from ..inventory import InventoryError, ip
from ..layout import Layout
from ..facts.steps import Absent, Change, Check, File, Probe, Step, path_probe

# What a single server's PostgreSQL is told: its socket only, no TCP at all.
SOCKET_ONLY = {"listen_addresses": ""}


def server_settings(layout: Layout, address: str) -> dict[str, str]:
    """A db host's PostgreSQL settings (ALTER SYSTEM, postgresql.auto.conf): its private address only (and its
    socket), TLS with gangway's certificate, passwords stored as SCRAM, and gangway's pg_hba."""
    return {"listen_addresses": str(ip(address)), "ssl": "on",
            "ssl_cert_file": layout.database_server_cert, "ssl_key_file": layout.database_server_key,
            "password_encryption": "scram-sha-256", "hba_file": layout.database_hba}


def alter_system(name: str, value: str) -> str:
    """ALTER SYSTEM SET NAME = 'VALUE', the value a SQL literal; the name one of server_settings' own."""
    if not name.replace("_", "").isalpha():
        raise ValueError(f"not a setting's name: {name!r}")
    return f"ALTER SYSTEM SET {name} = '{value.replace(chr(39), chr(39) * 2)}'"


def hba(app: str, clients: list[str]) -> str:
    """The db host's pg_hba.conf: postgres over the socket (peer), and the app's role to the app's database from
    each app host's address alone (/32 or /128), over TLS with scram-sha-256; nothing else."""
    if not app.replace("_", "").isalnum() or not app.isascii():
        raise ValueError(f"not an app's name: {app!r}")
    lines = ["# Written by gangway; edits here are replaced on the next provision.",
             "# Who may connect to the app's database: the app hosts alone, over TLS, with a password (SCRAM).",
             "# TYPE  DATABASE  USER  ADDRESS  METHOD",
             "local  all  postgres  peer"]
    for address in dict.fromkeys(ip(a) for a in clients):
        lines.append(f'hostssl  "{app}"  "{app}"  {address}/{address.max_prefixlen}  scram-sha-256')
    return "\n".join(lines) + "\n"


def parse_state(out: str, rc: int) -> dict | None:
    fields = out.strip().split("|")
    if rc != 0 or len(fields) < 3:
        return None
    role, database, *settings = fields
    return {"role": role == "1", "database": database == "1", "settings": settings}


def psql(sql: str) -> str:
    return as_user("postgres", f"psql -X -q -t -A -c {q(sql)}")


def state_probe(app: str, settings: tuple[str, ...] = tuple(SOCKET_ONLY)) -> Probe:
    lit = app.replace("'", "''")
    sql = " || '|' || ".join([f"(select count(*) from pg_roles where rolname = '{lit}')",
                              f"(select count(*) from pg_database where datname = '{lit}')",
                              *(f"current_setting('{name}')" for name in settings)])
    return Probe("postgres", f"cd / && {psql('select ' + sql)}", parse_state)


def changes(app: str, wanted: dict[str, str] = SOCKET_ONLY):
    def decide(state: dict | None, facts) -> list[Change]:
        if state is None:  # not running: start it, then do everything (each command is safe to repeat)
            state = {"settings": [None] * len(wanted), "role": False, "database": False}
            out = [Change("postgresql started", ("systemctl start postgresql",))]
        else:
            out = []
        differ = [name for name, now in zip(wanted, state["settings"]) if now != wanted[name]]
        if differ:
            out.append(Change("listening on its socket only" if wanted == SOCKET_ONLY else
                              f"{', '.join(differ)} set (restarted)", (
                *("cd / && " + psql(alter_system(name, wanted[name])) for name in differ),
                "systemctl restart postgresql")))
        if not state["role"]:
            out.append(Change(f"role {app}", ("cd / && " + as_user("postgres", f"createuser {q(app)}"),)))
        if not state["database"]:
            out.append(Change(f"database {app}", (
                "cd / && " + as_user("postgres", f"createdb --owner {q(app)} {q(app)}"),)))
        return out
    return decide


def steps(server: Server) -> list[Step]:
    """The database's steps for this server: a single server's PostgreSQL, the client of `database.url`, or
    with several servers the db host's PostgreSQL and the app hosts' client of it."""
    if server.inventory.database:
        return [remote_database(server)]
    if client.db_address(server.inventory) is None:
        return [database(server)]
    return ([tls(server), access(server), database(server), role_password(server)] if server.has("db") else []) \
        + ([linked_database(server)] if server.runs_app else [])


def database(server: Server) -> Step:
    if server.inventory.database:
        return remote_database(server)
    app, address = server.inventory.app.name, client.db_address(server.inventory)
    if address is None:
        return Step("postgresql", [Check(state_probe(app), changes(app))],
                    note=f"database {app}, peer auth over the socket, no TCP")
    wanted = server_settings(server.layout, address)
    return Step("postgresql", [Check(state_probe(app, tuple(wanted)), changes(app, wanted))],
                note=f"database {app}, listening on {address}:{defaults.POSTGRES_PORT} (and its socket), TLS, "
                     "scram-sha-256")


# --- a db host of several servers ---------------------------------------------------------------------------

def _program_probe(key: str, name: str, args: dict) -> Probe:
    return Probe(key, programs.python(name, {**args, "make": False}),
                 lambda out, rc: parse_reports(out) or None if rc == 0 else None)


def tls(server: Server) -> Step:
    """The CA (made once, its key root's alone) and PostgreSQL's certificate for the private address."""
    layout, address = server.layout, server.host.peer_address
    args = {"ca_cert": layout.database_ca, "ca_key": layout.database_ca_key, "cert": layout.database_server_cert,
            "key": layout.database_server_key, "address": address, "app": server.inventory.app.name,
            "ca_days": defaults.POSTGRES_CA_DAYS, "cert_days": defaults.POSTGRES_CERT_DAYS,
            "renew_days": defaults.POSTGRES_CERT_RENEW_DAYS}
    probe = _program_probe("database:tls", "database_tls.py", args)

    def decide(found: dict | None, facts) -> list[Change]:
        if found and found.get("ca") == "ok" and found.get("server") == "ok":
            return []
        why = ("the CA and " if not found or found.get("ca") != "ok" else "") + "the server certificate" + (
            f" ({found['server']})" if found and found.get("server") not in ("ok", "absent") else "")
        return [Change(f"{why} made", (programs.python("database_tls.py", {**args, "make": True}),
                                       "systemctl try-reload-or-restart postgresql"))]

    return Step("database TLS", [Check(probe, decide)],
                note=f"certificate for {address} signed by the CA made here ({layout.database_ca}; its key never "
                     "leaves this server)")


def access(server: Server) -> Step:
    """pg_hba.conf: the app hosts alone, over TLS, with scram-sha-256."""
    clients = [host.peer_address for host in server.inventory.app_hosts]
    return Step("database access", [File(server.layout.database_hba, hba(server.inventory.app.name, clients),
                                         mode="640", group="postgres")],
                after=["systemctl try-reload-or-restart postgresql"],
                note=f"hostssl, scram-sha-256, from {', '.join(clients)} only")


def role_password(server: Server) -> Step:
    """The app role's password: made once here (root's alone) and set on the role as a SCRAM verifier."""
    layout, app = server.layout, server.inventory.app.name
    args = {"secret": layout.database_password, "role": app}
    probe = _program_probe("database:password", "database_password.py", args)

    def decide(found: dict | None, facts) -> list[Change]:
        if found and found.get("secret") == "ok" and found.get("role") == "ok":
            return []
        what = ("password made in " + layout.database_password + " (root's alone) and " if not found or
                found.get("secret") != "ok" else "") + f"set on the role {app}"
        return [Change(what, (programs.python("database_password.py", {**args, "make": True}),))]

    return Step("database password", [Check(probe, decide)],
                note=f"the role {app}'s, kept in {layout.database_password} (root's alone)")


def parse_link(out: str, rc: int) -> DatabaseLink | None:
    found = parse_reports(out) if rc == 0 else {}
    if not all(found.get(key) for key in ("address", "ca_pem", "password")):
        return None
    return DatabaseLink(found["address"], found["ca_pem"], found["password"])


def link_probe(layout: Layout) -> Probe:
    """What the app hosts need of the db host, read back from it: None until it has all of it."""
    return Probe("database:link", programs.python("database_link.py", {"ca_cert": layout.database_ca,
                                                                       "secret": layout.database_password}),
                 parse_link)


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
    database = inventory.database
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

    def kept(facts) -> str:
        if password is not None:
            return f"password from {database.password_env} in {layout.database_passfile}"
        if facts[f"path:{layout.database_passfile}"] is None:
            return f"no password on the server ({database.password_env} is not set)"
        return f"password kept in {layout.database_passfile} ({database.password_env} is not set)"

    return _connected(client.client(inventory), ops, kept, extra=[path_probe(layout.database_passfile)],
                      changed=("password from " + database.password_env if password is not None
                               else f"{database.password_env} is not set: the password on the server is kept"),
                      hint=f"The password is read from {database.password_env} in your environment when you run "
                           "`fab provision`; check it, the URL's user and host, and that the database lets this "
                           "server in.")


def linked_database(server: Server) -> Step:
    """An app host's client of the db host: its CA and the role's password (from `server.database_link`, or
    on the db host itself read back there), and a connection made with them."""
    layout, app, db = server.layout, server.inventory.app.name, server.inventory.db_host
    probe = link_probe(layout)

    def link(facts) -> DatabaseLink | None:
        return server.database_link or (facts.get(probe.key) if server.has("db") else None)

    if link({}) is None and not server.has("db"):
        # Only a dry run gets here (a provision reads the link from the db host first, or stops).
        said = (f"the db host {db.peer_address} gave no CA and password: provision it first (`fab provision` "
                "with the whole inventory does)")
        return Step("database", [Check(Probe("database:none", "true"), lambda found, facts: [
            Change(said, (f"echo {q(said)} >&2; exit 1",))])])
    ops = [File(layout.database_ca, lambda facts: link(facts).ca_pem if link(facts) else "", mode="644"),
           File(layout.database_passfile, lambda facts: passfile(link(facts).password) if link(facts) else "",
                mode="600", owner=app, group=app, secret=True)]
    # The app's own way in, even on a db host that runs the app too: over TCP and TLS, as its role.
    app_client = client.Client(app, client.linked_url(app, db.peer_address), layout.database_passfile)
    return _connected(app_client, ops, lambda facts: f"password of the db host {db.peer_address} in "
                                                 f"{layout.database_passfile}",
                      extra=[probe] if server.has("db") else [],
                      changed=f"the CA and password of the db host {db.peer_address}",
                      hint=f"The db host {db.peer_address} must be provisioned first and let this server in "
                           f"({server.host.peer_address}): `fab provision` runs it first; `fab status` on it "
                           "shows PostgreSQL.")


def _connected(db: client.Client, ops: list, kept, extra: list, changed: str, hint: str) -> Step:
    """The client's files `ops`, then a connection through `db` with them, read back: who the app is connected
    as."""
    probe = client.reach_probe(db)
    connect = db.command("psql", "-X", "-q", "-t", "-A", "-c", "select 1")

    def check(reached: dict, facts) -> list[Change]:
        # Reached already: nothing to do. Not reached: trying again makes the step fail with libpq's own words,
        # unless a new passfile or CA comes first (then `validate` tries with them).
        return [] if reached["ok"] else [Change("connection to the database", (connect,))]

    def note(facts) -> str:
        reached = facts[probe.key]
        return (f"connected as {reached['said']}" if reached["ok"] else f"not connected: {reached['said']}") \
            + f"; {kept(facts)}"

    return Step("database", [*ops, Check(probe, check)], validate=connect, note=note, extra_probes=extra,
                changed_note=changed + "; a connection was made with it", hint=hint)
