"""The db role on two real servers of one cluster: gangway stands up the database server itself.

Member `db` gets roles: [db], member `app` roles: [web]. One `fab provision` provisions `db` first (PostgreSQL on
its private address, TLS with a certificate of the CA gangway made there, pg_hba admitting the app's role from
`app` alone, the firewall opening 5432 to `app` alone, a password made there), reads back its address, CA and
password, then provisions `app` as a client of it. The site writes its rows on `db` over TLS; the database
refuses the test machine, a connection without TLS, and the db host's own address; backups and restores run on
`db`, and `fab status` there reads PostgreSQL back.
"""

from __future__ import annotations

import re
import socket

import pytest

from tests import testhost
from tests.apprepo import AppRepo
from tests.integration.appsite import Site
from tests.integration.conftest import APP, DOMAINS, Provisioned, fab
from tests.integration.inventory import write_inventory
from tests.integration.test_database_url import SETTINGS_FROM_URL

CA = f"/etc/gangway/{APP}/database-ca.pem"


class DbRoleSite(Site):
    db: testhost.TestHost

    def on_db(self, command: str) -> str:
        """A root command on the db host, through the deploy user's sudo; fails unless it succeeded."""
        out = Provisioned(self.db, self.inventory, None).root(command)
        assert out.returncode == 0, f"{command}\n{out.stdout}\n{out.stderr}"
        return out.stdout.strip()

    def sql(self, query: str) -> str:
        """A query on the db host, as postgres there (not through gangway)."""
        return self.on_db(f"cd / && runuser -u postgres -- psql -X -q -t -A -d {APP} -c {_quote(query)}")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


@pytest.fixture(scope="module")
def cluster():
    with testhost.start_cluster(["app", "db"]) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def site(cluster, tmp_path_factory):
    app, db = cluster["app"], cluster["db"]
    tmp = tmp_path_factory.mktemp("db-role")
    repo = AppRepo(tmp / "project")
    repo.write("mysite/settings.py", (repo.path / "mysite" / "settings.py").read_text() + SETTINGS_FROM_URL)
    repo.commit("read the database from DATABASE_URL")
    inventory = write_inventory(app, tmp / "site.yaml", app=APP, domains=DOMAINS, source=repo.path,
                                health_check="/healthz/", layout=[(app, ("web",)), (db, ("db",))])
    for domain in DOMAINS:
        cluster.set_dns(domain, app.address)
    first = fab("provision", "--inventory", str(inventory))
    site = DbRoleSite(Provisioned(app, inventory, first), repo, inventory)
    site.db = db
    return site


def test_the_db_host_comes_first_and_a_second_provision_changes_nothing_on_either(site):
    said = site.server.first_run.stdout
    db, app = site.db.address, site.server.host.address
    assert said.index(f"recap {db}:") < said.index(f"provision {app} "), said
    assert re.search(r"changed\s+database TLS: the CA and the server certificate made", said), said
    assert re.search(rf"changed\s+database: .*the CA and password of the db host {re.escape(db)}", said), said
    again = site.server.provision()
    print("\n".join(line for line in (said + again.stdout).splitlines() if line.startswith("recap ")))
    for host in (db, app):
        assert re.search(rf"recap {re.escape(host)}: \d+ steps, 0 changed", again.stdout), again.stdout
    assert f"database: connected as {APP}@{APP}" in again.stdout
    assert re.search(rf"firewall: open: 22/tcp; 5432/tcp from {re.escape(app)} only", again.stdout), again.stdout
    # The app host has the client only; the db host the server, its CA key root's alone.
    installed = site.root("dpkg-query -W -f='${Package} ${Status}\\n' 'postgresql*'")
    assert re.search(r"^postgresql-client \S+ ok installed", installed, re.M), installed
    assert not re.search(r"^postgresql(-\d+)? \S+ ok installed", installed, re.M), installed
    assert site.root(f"stat -c '%U %a' /srv/{APP}/shared/database.pgpass").strip() == f"{APP} 600"
    assert site.on_db(f"stat -c '%U %a' /etc/gangway/{APP}/database-ca.key /etc/gangway/{APP}/database-password") \
        .split("\n") == ["root 600", "root 600"]
    assert site.root(f"cat {CA}") == site.on_db(f"cat {CA}") + "\n"
    assert site.root(f"test -e /etc/gangway/{APP}/database-ca.key && echo there || echo absent").strip() == "absent"
    san = site.on_db(f"openssl x509 -in /etc/gangway/{APP}/database-server.pem -noout -ext subjectAltName")
    assert f"IP Address:{db}" in san, san


def test_the_site_writes_its_rows_on_the_db_host_over_tls(site):
    site.deploy()
    before = int(site.sql("select count(*) from counter_hit") or 0)
    for _ in range(3):
        assert site.get("/").status == 200
    assert int(site.sql("select count(*) from counter_hit")) == before + 3
    assert site.sql(f"select bool_and(s.ssl) || ' ' || count(*) from pg_stat_ssl s join pg_stat_activity a "
                    f"using (pid) where a.usename = '{APP}' and a.client_addr = '{site.server.host.address}'") \
        .startswith("true "), "the app's connections are not all TLS"
    url = site.root(f"grep ^DATABASE_URL= /srv/{APP}/shared/env").strip()
    wanted = f"postgres://{APP}@{site.db.address}:5432/{APP}?sslmode=verify-full&sslrootcert={CA}"
    assert url == f'DATABASE_URL="{wanted}"', url


def test_the_database_refuses_whom_it_should(site):
    db = site.db.address
    # From the test machine: the firewall drops it.
    with pytest.raises(OSError):
        socket.create_connection((db, 5432), timeout=5).close()
    # From the app host without TLS: no hostssl line matches.
    plain = site.server.root(f"cd / && runuser -u {APP} -- env PGPASSFILE=/srv/{APP}/shared/database.pgpass "
                             f"psql 'host={db} dbname={APP} user={APP} sslmode=disable' -c 'select 1'")
    assert plain.returncode != 0 and "no pg_hba.conf entry" in plain.stderr, plain.stderr
    # From the db host's own address, with the app's password and as postgres: not an app host.
    for user in (APP, "postgres"):
        own = Provisioned(site.db, site.inventory, None).root(
            f"cd / && printf '*:*:*:*:%s\\n' \"$(cat /etc/gangway/{APP}/database-password)\" > /root/.pgpass && "
            f"chmod 600 /root/.pgpass && psql 'host={db} dbname={APP} user={user} sslmode=verify-full "
            f"sslrootcert={CA}' -c 'select 1'; s=$?; rm -f /root/.pgpass; exit $s")
        assert own.returncode != 0 and "no pg_hba.conf entry" in own.stderr, own.stderr


def test_backups_and_restore_run_on_the_db_host_and_status_reads_postgresql_back(site):
    site.deploy()
    out = site.fab("backup").stdout
    assert f"backup {APP} on {site.db.address}" in out, out
    name = re.search(r"backups/(\S+-manual\.dump) ", out)
    assert name, out
    assert name.group(1) in site.on_db(f"ls /srv/{APP}/backups")
    before = int(site.sql("select count(*) from counter_hit"))
    for _ in range(2):
        assert site.get("/").status == 200
    assert int(site.sql("select count(*) from counter_hit")) == before + 2
    out = site.fab("restore", name.group(1), "--yes").stdout
    assert f"restore {name.group(1)} into {APP} on {site.db.address}" in out, out
    assert int(site.sql("select count(*) from counter_hit")) == before, out
    assert site.get("/version/").status == 200
    listed = site.fab("backups").stdout
    assert name.group(1) in listed and f"{site.server.host.address}:" in listed, listed
    status = site.fab("status", check=False).stdout
    assert re.search(rf"ok\s+postgresql: listening on {re.escape(site.db.address)}:5432 \(and its socket\), TLS on, "
                     rf"[1-9]\d* connection\(s\) to {APP}, [1-9]\d* over TLS", status), status
    assert f"database: connected as {APP}@{APP}" in status, status
