"""The app against a PostgreSQL of its own (`database.url`), on two real servers of one cluster.

Member `db` stands in for a managed database: the test itself installs Debian's PostgreSQL there, listening on
its address, with a CA and a server certificate made by openssl, and pg_hba admitting only `app`, over TLS
(hostssl) with scram-sha-256. Member `app` is provisioned by gangway with database.url pointing at it
(sslmode=verify-full against that CA): no PostgreSQL server is installed there, the site writes its rows on
`db`, `fab backup` and `fab restore` go over the URL, and a wrong password is said plainly.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests import testhost
from tests.apprepo import AppRepo
from tests.integration.appsite import Site
from tests.integration.conftest import APP, DOMAINS, REPO, Provisioned
from tests.integration.inventory import write_inventory

# A password with what a passfile must escape (: and \) and what a shell would run, were it ever spliced.
PASSWORD = "pa:ss\\wo'rd $(touch /tmp/pwned)"
VARIABLE = "MYSITE_DATABASE_PASSWORD"

# The example app reads only DJANGO_DB_NAME (the local socket); a project with a database elsewhere reads
# DATABASE_URL, as `gangway init`'s production settings do.
SETTINGS_FROM_URL = '''

# The database DATABASE_URL names, when it names a host (gangway's database.url).
from urllib.parse import parse_qsl as _qsl, unquote as _unquote, urlsplit as _split  # noqa: E402

_url = _split(os.environ.get("DATABASE_URL", ""))
if _url.hostname:
    DATABASES["default"].update(NAME=_unquote(_url.path.lstrip("/")), USER=_unquote(_url.username or ""),
                                HOST=_url.hostname, PORT=str(_url.port or ""), OPTIONS=dict(_qsl(_url.query)))
'''

STAND_UP = r"""set -e
export DEBIAN_FRONTEND=noninteractive
apt-get -q -o Acquire::http::Proxy="$PROXY" update >/dev/null
apt-get -q -o Acquire::http::Proxy="$PROXY" install -y postgresql openssl >/dev/null
conf=$(ls -d /etc/postgresql/*/main)
mkdir -p /etc/test-db && cd /etc/test-db
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-db-ca -keyout ca.key -out ca.pem \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=$ADDRESS" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=IP:%s\n' "$ADDRESS" > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out server.crt \
    -extfile server.ext 2>/dev/null
chown postgres:postgres server.key server.crt && chmod 600 server.key
cat > "$conf/conf.d/test-db.conf" <<EOF
listen_addresses = '$ADDRESS'
ssl = on
ssl_cert_file = '/etc/test-db/server.crt'
ssl_key_file = '/etc/test-db/server.key'
password_encryption = 'scram-sha-256'
EOF
for client in $CLIENTS; do
    echo "hostssl $APP $APP $client/32 scram-sha-256" >> "$conf/pg_hba.conf"
done
systemctl restart postgresql
runuser -u postgres -- createuser --login "$APP"
runuser -u postgres -- createdb --owner "$APP" "$APP"
"""


class DbSite(Site):
    db: testhost.TestHost

    def sql(self, query: str) -> str:
        """A query on the database server, as postgres there (not through gangway)."""
        return db_sql(self.db, query)


def db_sql(db: testhost.TestHost, query: str) -> str:
    out = subprocess.run(db.ssh_argv(f"cd / && runuser -u postgres -- psql -X -q -t -A -v ON_ERROR_STOP=1 "
                                     f"-d {APP}"), input=query, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip()


def set_password(db: testhost.TestHost, password: str) -> None:
    literal = password.replace("'", "''")
    db_sql(db, f"ALTER ROLE {APP} PASSWORD '{literal}'")


def provision(inventory, password: str | None, check: bool = True) -> subprocess.CompletedProcess:
    """`fab provision` with the password in the operator's environment, or without the variable."""
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    if password is not None:
        env[VARIABLE] = password
    result = subprocess.run([sys.executable, "-m", "fabric", "provision", "--inventory", str(inventory)],
                            cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def stand_up_database(db: testhost.TestHost, clients: list[testhost.TestHost], ca_file) -> None:
    """Debian's PostgreSQL on `db`, as a managed one would be: TLS, scram, only `clients` let in; the app's
    role has PASSWORD, and its CA certificate is written to `ca_file` for the inventory's ca_bundle."""
    clients_ = " ".join(client.address for client in clients)
    env = f"PROXY={shlex.quote(db.proxy_url)} ADDRESS={db.address} CLIENTS={shlex.quote(clients_)} APP={APP}"
    out = db.ssh(f"{env} sh -c {shlex.quote(STAND_UP)}", timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    set_password(db, PASSWORD)
    ca_file.write_text(db.ssh("cat /etc/test-db/ca.pem").stdout)


@pytest.fixture(scope="module")
def cluster():
    with testhost.start_cluster(["app", "db"]) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def site(cluster, tmp_path_factory):
    app, db = cluster["app"], cluster["db"]
    tmp = tmp_path_factory.mktemp("database-url")
    stand_up_database(db, [app], tmp / "db-ca.pem")
    repo = AppRepo(tmp / "project")
    repo.write("mysite/settings.py", (repo.path / "mysite" / "settings.py").read_text() + SETTINGS_FROM_URL)
    repo.commit("read the database from DATABASE_URL")
    inventory = write_inventory(app, tmp / "site.yaml", app=APP, domains=DOMAINS, source=repo.path,
                                health_check="/healthz/",
                                database={"url": f"postgres://{APP}@{db.address}:5432/{APP}?sslmode=verify-full",
                                          "ca_bundle": "db-ca.pem", "password_env": VARIABLE})
    for domain in DOMAINS:
        cluster.set_dns(domain, app.address)
    site = DbSite(Provisioned(app, inventory, provision(inventory, PASSWORD)), repo, inventory)
    site.db = db
    return site


def test_provision_installs_no_postgresql_server_and_connects_over_tls(site):
    said = site.server.first_run.stdout
    assert re.search(r"changed\s+database: .*password from " + VARIABLE, said), said
    installed = site.server.root("dpkg-query -W -f='${Package} ${Status}\\n' 'postgresql*'").stdout
    assert re.search(r"^postgresql-client \S+ ok installed", installed, re.M), installed
    assert not re.search(r"^postgresql(-\d+)? \S+ ok installed", installed, re.M), installed
    assert site.root(f"stat -c '%U %a' /srv/{APP}/shared/database.pgpass").strip() == f"{APP} 600"
    # Provision again without the variable: the password on the server is kept, and it says so.
    again = provision(site.inventory, None)
    assert f"database: connected as {APP}@{APP}; password kept in /srv/{APP}/shared/database.pgpass" in again.stdout
    assert re.search(r"recap \S+: \d+ steps, 0 changed", again.stdout), again.stdout
    for host in (site.db, site.server.host):
        assert host.ssh("ls /tmp/pwned").returncode != 0  # the password was never run as a command


def test_the_site_writes_its_rows_on_the_database_server_and_backup_restore_go_over_the_url(site):
    site.deploy()
    for _ in range(3):
        assert site.get("/").status == 200
    # The app's connections arrive over TLS, as its role.
    assert site.sql(f"select bool_and(s.ssl) from pg_stat_ssl s join pg_stat_activity a using (pid) "
                    f"where a.usename = '{APP}'") == "t"
    before = int(site.sql("select count(*) from counter_hit"))
    assert before >= 3
    out = site.fab("backup").stdout
    name = re.search(r"backups/(\S+-manual\.dump) ", out)
    assert name, out
    for _ in range(2):
        assert site.get("/").status == 200
    assert int(site.sql("select count(*) from counter_hit")) == before + 2
    out = site.fab("restore", name.group(1), "--yes").stdout
    assert int(site.sql("select count(*) from counter_hit")) == before, out
    assert site.get("/version/").status == 200
    status = site.fab("status")
    assert f"database: connected as {APP}@{APP}" in status.stdout and "FAIL" not in status.stdout, status.stdout


def test_a_wrong_password_is_said_plainly_by_status_and_provision(site):
    set_password(site.db, "another one")
    try:
        status = site.fab("status", check=False)
        assert status.returncode != 0 and "password authentication failed" in status.stdout, status.stdout
        assert VARIABLE in status.stdout
        refused = provision(site.inventory, "not it", check=False)
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0 and "password authentication failed" in said, said
        assert "step 'database' failed" in said and VARIABLE in said
        fixed = provision(site.inventory, "another one")
        assert re.search(r"changed\s+database", fixed.stdout), fixed.stdout
        assert site.fab("status").returncode == 0
    finally:
        set_password(site.db, PASSWORD)
        provision(site.inventory, PASSWORD)
