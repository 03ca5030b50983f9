"""The db role of several servers: the builders of PostgreSQL's settings, its pg_hba and the firewall refuse
what is not an address rather than write it; the app hosts get the db host's URL through the one client
builder; each host gets the steps of its roles."""

from pathlib import Path

import pytest

from tasks import provisioning
from tasks.commands.database import client, db_address, environment, unanswered
from tasks.inventory import parse
from tasks.layout import Layout
from tasks.provisioning import DatabaseLink, Server, backups, firewall, postgres, system
from tasks.cli import status

LAYOUT = Layout("mysite")
HOSTILE = ["10.0.0.2/0", "10.0.0.2 all all trust", "10.0.0.2\nhost all all 0.0.0.0/0 trust", "0.0.0.0/0",
           "example.com", "10.0.0.2'; drop table x; --", "fe80::1%eth0", ""]


def several(*hosts) -> object:
    return parse({"app": {"name": "mysite"}, "hosts": list(hosts)}, "inventory/test.yaml", Path("."))


LAYOUT_OF_TWO = several({"address": "203.0.113.10", "private_address": "10.0.0.2", "roles": ["web", "worker"]},
                        {"address": "203.0.113.11", "private_address": "10.0.0.3", "roles": ["db"]})
APP_HOST, DB_HOST = LAYOUT_OF_TWO.hosts


def server(inventory, host, link=None) -> Server:
    return Server(inventory, host, ("ssh-ed25519 AAAA",), lambda: None, link)


def test_pg_hba_admits_the_app_role_from_each_app_host_alone_over_tls_with_scram():
    text = postgres.hba("mysite", ["10.0.0.2", "fd00::0:5", "10.0.0.2"])
    rules = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    assert rules == [["local", "all", "postgres", "peer"],
                     ["hostssl", '"mysite"', '"mysite"', "10.0.0.2/32", "scram-sha-256"],
                     ["hostssl", '"mysite"', '"mysite"', "fd00::5/128", "scram-sha-256"]]


@pytest.mark.parametrize("value", HOSTILE)
def test_pg_hba_the_settings_and_the_firewall_refuse_what_is_not_an_address(value):
    with pytest.raises(ValueError):
        postgres.hba("mysite", [value])
    with pytest.raises(ValueError):
        postgres.server_settings(LAYOUT, value)
    with pytest.raises(ValueError):
        firewall.ruleset(22, peers=((value, 5432),))


@pytest.mark.parametrize("app", ['my"site', "my site", "mysite\nhost", "all,x"])
def test_pg_hba_refuses_an_app_name_it_would_have_to_quote(app):
    with pytest.raises(ValueError):
        postgres.hba(app, ["10.0.0.2"])


def test_settings_are_sql_literals_and_name_gangways_files():
    wanted = postgres.server_settings(LAYOUT, "10.0.0.3")
    assert wanted == {"listen_addresses": "10.0.0.3", "ssl": "on", "ssl_cert_file": LAYOUT.database_server_cert,
                      "ssl_key_file": LAYOUT.database_server_key, "password_encryption": "scram-sha-256",
                      "hba_file": LAYOUT.database_hba}
    assert postgres.alter_system("ssl_cert_file", "/a'b") == "ALTER SYSTEM SET ssl_cert_file = '/a''b'"
    with pytest.raises(ValueError):
        postgres.alter_system("ssl = on; drop", "x")


def test_the_firewall_opens_postgresql_to_the_app_hosts_alone_and_a_single_server_not_at_all():
    rules = firewall.ruleset(22, peers=(("10.0.0.2", 5432), ("fd00::5", 5432)))
    assert "ip saddr 10.0.0.2 tcp dport 5432 accept" in rules
    assert "ip6 saddr fd00::5 tcp dport 5432 accept" in rules
    assert "5432" not in firewall.ruleset(22)
    # The db host of two servers: no web ports, PostgreSQL from the app host alone; the app host: no 5432.
    assert firewall.openings(server(LAYOUT_OF_TWO, DB_HOST)) == ((), (("10.0.0.2", 5432),))
    assert all(port != 5432 for _, port in firewall.openings(server(LAYOUT_OF_TWO, APP_HOST))[1])
    single = several({"address": "203.0.113.10"})
    assert firewall.openings(server(single, single.hosts[0])) == ((80, 443), ())


def test_the_app_hosts_reach_the_db_host_through_the_one_client_builder():
    url = "postgres://mysite@10.0.0.3:5432/mysite?sslmode=verify-full&sslrootcert=/etc/gangway/mysite/database-ca.pem"
    assert db_address(LAYOUT_OF_TWO) == "10.0.0.3"
    assert environment("mysite", None, "10.0.0.3") == {"DJANGO_DB_NAME": "mysite", "DATABASE_URL": url,
                                                       "PGPASSFILE": LAYOUT.database_passfile}
    assert client(LAYOUT_OF_TWO, APP_HOST).url == url
    assert environment("mysite", None, "fd00::3")["DATABASE_URL"].startswith("postgres://mysite@[fd00::3]:5432/")
    # On the db host no app user exists: postgres over the socket, and a restore takes the app's role.
    on_db = client(LAYOUT_OF_TWO, DB_HOST)
    assert on_db.argv("pg_dump", "--format=custom", dumper=True)[:4] == ("runuser", "-u", "postgres", "--")
    assert on_db.argv("pg_restore", "--clean") == ("runuser", "-u", "postgres", "--", "pg_restore", "--clean",
                                                   "--role=mysite", "--dbname=mysite")
    single = several({"address": "203.0.113.10"})
    assert db_address(single) is None and client(single, single.hosts[0]).url is None


def test_messages_name_where_the_database_is():
    assert "db host 10.0.0.3" in unanswered(LAYOUT_OF_TWO)
    assert "on the server" in unanswered(several({"address": "203.0.113.10"}))


def test_each_host_gets_the_steps_of_its_roles():
    link = DatabaseLink("10.0.0.3", "PEM", "secret")
    db = [s.title for s in provisioning.steps(server(LAYOUT_OF_TWO, DB_HOST))]
    app = [s.title for s in provisioning.steps(server(LAYOUT_OF_TWO, APP_HOST, link))]
    assert db[db.index("server layout"):db.index("firewall")] == [
        "server layout", "database TLS", "database access", "postgresql", "database password",
        "scheduled backups"]
    assert "database" in app and "postgresql" not in app and "scheduled backups" not in app
    assert system.database_packages(server(LAYOUT_OF_TWO, DB_HOST)) == ("postgresql",)
    assert system.database_packages(server(LAYOUT_OF_TWO, APP_HOST)) == ("postgresql-client",)
    assert "secret" not in repr(link)
    # The daily dump runs on the db host, as postgres over its socket.
    command = [s for s in provisioning.steps(server(LAYOUT_OF_TWO, DB_HOST)) if s.title == "scheduled backups"][0]
    assert '"postgres"' in command.operations[1].content and "After=postgresql.service" in backups.service_file(
        server(LAYOUT_OF_TWO, DB_HOST))


def test_an_app_host_writes_the_db_hosts_ca_and_password_as_file_contents_never_commands():
    link = DatabaseLink("10.0.0.3", "-----BEGIN CERTIFICATE-----\n", "pa:ss$(x)")
    step = postgres.linked_database(server(LAYOUT_OF_TWO, APP_HOST, link))
    facts = {p.key: None for p in step.probes()} | {"database:reach": {"ok": False, "said": "refused"}}
    plan = step.plan(facts)
    assert "pa:ss$(x)" not in plan.script and "pa\\:ss$(x)" not in plan.script  # base64 in the script
    assert [c.what for c in plan.changes][:2] == [f"{LAYOUT.database_ca} created",
                                                  f"{LAYOUT.database_passfile} created"]
    assert step.operations[1].secret and step.operations[1].mode == "600"


def test_status_reads_the_db_hosts_postgresql_back():
    found = status.parse_postgres("10.0.0.3:5432\n\non 3 2\n", 0)
    assert found == {"listening": ["10.0.0.3:5432"], "ssl": True, "connections": 3, "tls": 2}
    assert status.postgres_check(found, "mysite", "10.0.0.3").level == status.OK
    wide = status.parse_postgres("0.0.0.0:5432\n\non 0 0\n", 0)
    assert status.postgres_check(wide, "mysite", "10.0.0.3").level == status.FAIL
    assert status.postgres_check(status.parse_postgres("", 2), "mysite", "10.0.0.3").level == status.FAIL
