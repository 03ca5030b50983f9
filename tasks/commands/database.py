"""The app's database as psql, pg_dump and pg_restore reach it on the server: the one place that knows how.

Local form (no `database` in the inventory): Debian's PostgreSQL on the server itself, peer authentication over
its socket, so the app's Unix user is its role and no password exists; dumps and dump checks run as postgres,
who reads everything. URL form (`database.url`): an existing PostgreSQL elsewhere, reached by every client as the
app user with the connection string the app itself gets (DATABASE_URL) and the password in the app user's libpq
passfile (PGPASSFILE): Django, psql, pg_dump and pg_restore authenticate the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ..inventory import Database, Inventory, database_options
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


def environment(app: str, database: Database | None) -> dict[str, str]:
    """DJANGO_DB_NAME, DATABASE_URL (and PGPASSFILE) as the app's environment gets them."""
    layout = Layout(app)
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

    def argv(self, program: str, *args: str, dumper: bool = False, connect: bool = True) -> tuple[str, ...]:
        """`program args` connected to the app's database (`connect`), run as the app user; `dumper`: as the
        user that may read all of it (postgres on the local socket)."""
        if self.url is None:
            user = "postgres" if dumper else self.app
            return ("runuser", "-u", user, "--", program, *args, *((f"--dbname={self.app}",) if connect else ()))
        return ("runuser", "-u", self.app, "--", "env", f"PGPASSFILE={self.passfile}", program, *args,
                *((f"--dbname={self.url}",) if connect else ()))

    def command(self, program: str, *args: str, dumper: bool = False, connect: bool = True) -> str:
        """The same as a shell command, from / (postgres may not read the deploy user's directory)."""
        return "cd / && " + join(*self.argv(program, *args, dumper=dumper, connect=connect))


def client(inventory: Inventory) -> Client:
    layout = Layout(inventory.app.name)
    if inventory.database is None:
        return Client(inventory.app.name)
    return Client(inventory.app.name, connection_url(inventory.database, layout), layout.database_passfile)


def reach_probe(db: Client) -> Probe:
    """Who the app is connected as, read back from the database: `USER@DATABASE`, or the client's error."""
    sql = "select current_user || '@' || current_database()"
    return Probe("database:reach", db.command("psql", "-X", "-q", "-t", "-A", "-c", sql) + " 2>&1",
                 lambda out, rc: {"ok": rc == 0, "said": _one_line(out) or f"exit {rc}"})


def _one_line(out: str) -> str:
    """libpq's message on one line: its reason and where the password came from are on lines of their own."""
    return "; ".join(line.strip() for line in out.strip().splitlines() if line.strip())
