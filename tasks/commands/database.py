"""The app's database as psql, pg_dump and pg_restore reach it on the server: the one place that knows how.

Local form (no `database` in the inventory): Debian's PostgreSQL on the server itself, peer authentication over
its socket, so the app's Unix user is its role and no password exists; dumps and dump checks run as postgres,
who reads everything. URL form (`database.url`): an existing PostgreSQL elsewhere, reached by every client as the
app user with the connection string the app itself gets (DATABASE_URL) and the password in the app user's libpq
passfile (PGPASSFILE): Django, psql, pg_dump and pg_restore authenticate the same way.

Several servers with a db host (README, "Several servers"): the app hosts are the URL form, with the URL gangway
knows (the db host's private address, sslmode=verify-full against the CA gangway made there); on the db host
itself the clients run as postgres over the socket, since no app user exists there, and a restore takes the
app's role (pg_restore --role), so what it creates is the app's.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .. import defaults
from ..inventory import Database, Host, Inventory, database_options
from ..layout import SYSTEM_CA_STORE, Layout
from .shell import join
from ..facts.steps import Probe


def connection_url(database: Database, layout: Layout) -> str:
    """database.url, with the CA to check the server against when there is one to name: the inventory's
    ca_bundle (copied to the server), else the system store for sslmode=verify-ca/verify-full. Never for
    sslmode=require: libpq then verifies the CA whenever a root certificate is named."""
    if database.ca_bundle:
        root = layout.database_ca
    elif database_options(database.url).get("sslmode") in ("verify-ca", "verify-full"):
        root = SYSTEM_CA_STORE
    else:
        return database.url
    return f"{database.url}{'&' if '?' in database.url else '?'}sslrootcert={root}"


def linked_url(app: str, address: str) -> str:
    """The db host's database as every app host reaches it: over TCP to its private address, TLS with the
    certificate checked against the CA gangway made there, as the app's role (the password is in the passfile)."""
    host = f"[{address}]" if ":" in address else address
    return (f"postgres://{app}@{host}:{defaults.POSTGRES_PORT}/{app}"
            f"?sslmode=verify-full&sslrootcert={Layout(app).database_ca}")


def db_address(inventory: Inventory) -> str | None:
    """The private address of the layout's db host, when the app reaches its database there over the network
    (several servers); None for a single server and for database.url."""
    db = inventory.db_host
    return db.peer_address if inventory.several_servers and db is not None else None


def environment(app: str, database: Database | None, db_address: str | None = None) -> dict[str, str]:
    """DJANGO_DB_NAME, DATABASE_URL (and PGPASSFILE) as the app's environment gets them; `db_address`: the db
    host's, in a layout of several servers."""
    layout = Layout(app)
    if db_address is not None:
        return {"DJANGO_DB_NAME": app, "DATABASE_URL": linked_url(app, db_address),
                "PGPASSFILE": layout.database_passfile}
    if database is None:
        # The local socket, and the app's own Unix identity as its database role (peer authentication).
        return {"DJANGO_DB_NAME": app, "DATABASE_URL": f"postgres:///{app}"}
    name = unquote(urlsplit(database.url).path.lstrip("/"))
    return {"DJANGO_DB_NAME": name, "DATABASE_URL": connection_url(database, layout),
            "PGPASSFILE": layout.database_passfile}


@dataclass(frozen=True)
class Client:
    """The app's database client: argv and shell forms of psql/pg_dump/pg_restore, run from a root shell."""
    app: str
    url: str | None = None  # the connection string; None: the local socket, peer authentication
    passfile: str = ""
    db_host: bool = False  # the db host of several servers: as postgres over the socket (no app user there)

    def argv(self, program: str, *args: str, dumper: bool = False, connect: bool = True) -> tuple[str, ...]:
        """`program args` connected to the app's database (`connect`), run as the app user; `dumper`: as the
        user that may read all of it (postgres on the local socket)."""
        if self.url is None:
            user = "postgres" if dumper or self.db_host else self.app
            # On a db host, what pg_restore creates must be the app's, as if its role had run it.
            role = (f"--role={self.app}",) if self.db_host and not dumper and program == "pg_restore" else ()
            return ("runuser", "-u", user, "--", program, *args, *role,
                    *((f"--dbname={self.app}",) if connect else ()))
        return ("runuser", "-u", self.app, "--", "env", f"PGPASSFILE={self.passfile}", program, *args,
                *((f"--dbname={self.url}",) if connect else ()))

    def command(self, program: str, *args: str, dumper: bool = False, connect: bool = True) -> str:
        """The same as a shell command, from / (postgres may not read the deploy user's directory)."""
        return "cd / && " + join(*self.argv(program, *args, dumper=dumper, connect=connect))


def client(inventory: Inventory, host: Host | None = None) -> Client:
    """The app's database client on `host` (None: a host that is not the db host of several servers)."""
    app = inventory.app.name
    layout = Layout(app)
    if inventory.database is not None:
        return Client(app, connection_url(inventory.database, layout), layout.database_passfile)
    address = db_address(inventory)
    if address is None:
        return Client(app)
    if host is not None and host.address == inventory.db_host.address:
        return Client(app, db_host=True)
    return Client(app, linked_url(app, address), layout.database_passfile)


def unanswered(inventory: Inventory) -> str:
    """What to ask when the app's database gave no answer, naming where it is."""
    address = db_address(inventory)
    if address is not None:
        return (f"does PostgreSQL on the db host {address} answer? (`fab status` shows it; `sudo systemctl "
                "status postgresql` there)")
    if inventory.database is not None:
        return (f"does the database at {urlsplit(inventory.database.url).hostname} answer? (`fab status` says what "
                "its client was told)")
    return "is PostgreSQL running? (`sudo systemctl status postgresql` on the server)"


def reach_probe(db: Client) -> Probe:
    """Who the app is connected as, read back from the database: `USER@DATABASE`, or the client's error."""
    sql = "select current_user || '@' || current_database()"
    return Probe("database:reach", db.command("psql", "-X", "-q", "-t", "-A", "-c", sql) + " 2>&1",
                 lambda out, rc: {"ok": rc == 0, "said": _one_line(out) or f"exit {rc}"})


def _one_line(out: str) -> str:
    """libpq's message on one line: its reason and where the password came from are on lines of their own."""
    return "; ".join(line.strip() for line in out.strip().splitlines() if line.strip())
