"""`database.url`: the inventory's checks, the one builder of the app's database client (local and URL forms),
the app's environment, the passfile, the scheduled backup's command and provision's choice of packages."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tasks import defaults
from tasks.commands import database as client
from tasks.commands import release as release_commands
from tasks.commands.backup import adopt_upload, restore_database
from tasks.inventory import App, Database, Host, Inventory, InventoryError, parse
from tasks.layout import SYSTEM_CA_STORE, Layout
from tasks.project.django import managed_environment
from tasks import provisioning
from tasks.provisioning import backups, postgres, system
from tests.unit.shellcheck import assert_shellcheck_clean

LAYOUT = Layout("mysite")
URL = "postgres://mysite@db.example.com:5432/mysite?sslmode=verify-full"


def inventory(tmp_path, **database) -> Inventory:
    return parse({"app": {"name": "mysite"}, "hosts": [{"address": "10.0.0.2"}], "database": database},
                 "production.yaml", tmp_path)


def refused(tmp_path, **database) -> str:
    with pytest.raises(InventoryError) as error:
        inventory(tmp_path, **database)
    return str(error.value)


# --- the inventory ---------------------------------------------------------------------------------------------

def test_without_a_database_key_the_database_is_the_servers_own(tmp_path):
    inv = parse({"app": {"name": "mysite"}, "hosts": [{"address": "10.0.0.2"}]}, "production.yaml", tmp_path)
    assert inv.database is None
    assert client.client(inv) == client.Client("mysite")
    assert managed_environment(inv.app, "10.0.0.2", inv.database)["DATABASE_URL"] == "postgres:///mysite"
    assert "PGPASSFILE" not in managed_environment(inv.app, "10.0.0.2", inv.database)


def test_a_database_url_with_its_defaults(tmp_path):
    database = inventory(tmp_path, url=URL).database
    assert database == Database(URL, None, defaults.DATABASE_PASSWORD_ENV)


def test_the_ca_bundle_is_a_file_beside_the_inventory(tmp_path):
    (tmp_path / "db-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    assert inventory(tmp_path, url=URL, ca_bundle="db-ca.pem").database.ca_bundle == tmp_path / "db-ca.pem"
    said = refused(tmp_path, url=URL, ca_bundle="missing.pem")
    assert "database.ca_bundle" in said and "no such file" in said


@pytest.mark.parametrize("url, words", [
    ("postgres://mysite:secret@db.example.com/mysite", "holds a password"),
    ("postgres://db.example.com/mysite", "names no user"),
    ("postgres://mysite@db.example.com/", "names no database"),
    ("postgres://mysite@db.example.com", "names no database"),
    ("postgres://mysite@db.example.com/a/b", "names no database"),
    ("mysql://mysite@db.example.com/mysite", "must start with postgres:// or postgresql://"),
    ("postgres://mysite@db.example.com/mysite?password=x", "use database.password_env"),
    ("postgres://mysite@db.example.com/mysite?passfile=/x", "use database.password_env"),
    ("postgres://mysite@db.example.com/mysite?sslrootcert=/x", "use database.ca_bundle"),
    ("postgres://mysite@db.example.com/mysite?sslmode=maybe", "use one of disable"),
    ("postgres://mysite@db.example.com/mysite?sslmode", "is not NAME=VALUE"),
    ("postgres://mysite@db.example.com/mysite?x=$(reboot)", "may not have"),
    ("postgres://mysite@db.example.com/mysite?x='", "may not have"),
    ("postgres://mysite@db.example.com/mysite\n", "line break"),
    ("postgres://mysite@db.example.com:99999/mysite", "between 1 and 65535"),
])
def test_a_bad_url_is_refused_naming_the_key_and_the_fix(tmp_path, url, words):
    said = refused(tmp_path, url=url)
    assert said.startswith("production.yaml: database.url: ") and words in said, said


def test_the_password_in_a_url_points_to_password_env(tmp_path):
    said = refused(tmp_path, url="postgres://mysite:hunter2@db.example.com/mysite")
    assert "database.password_env" in said and defaults.DATABASE_PASSWORD_ENV in said and "git" in said


def test_password_env_is_a_variable_name_and_url_is_required(tmp_path):
    assert "database.password_env" in refused(tmp_path, url=URL, password_env="NOT A NAME")
    assert "database.url: is missing" in refused(tmp_path, password_env="X")
    assert "did you mean 'password_env'" in refused(tmp_path, url=URL, password="x")


# --- the app's environment and the connection string ------------------------------------------------------------

def test_the_app_gets_the_url_with_its_ca_and_the_passfile(tmp_path):
    (tmp_path / "ca.pem").write_text("ca")
    inv = inventory(tmp_path, url=URL, ca_bundle="ca.pem")
    env = managed_environment(inv.app, "10.0.0.2", inv.database)
    assert env["DATABASE_URL"] == f"{URL}&sslrootcert={LAYOUT.database_ca}"
    assert env["PGPASSFILE"] == LAYOUT.database_passfile
    assert env["DJANGO_DB_NAME"] == "mysite"
    other = Database("postgres://u@h/shop%5Fdb")
    assert managed_environment(inv.app, "10.0.0.2", other)["DJANGO_DB_NAME"] == "shop_db"


@pytest.mark.parametrize("url, root", [
    ("postgres://u@h/d?sslmode=verify-full", SYSTEM_CA_STORE),
    ("postgres://u@h/d?sslmode=verify-ca", SYSTEM_CA_STORE),
    ("postgres://u@h/d?sslmode=require", None),  # libpq would verify the CA of a `require` if one were named
    ("postgres://u@h/d", None),
])
def test_without_a_ca_bundle_verification_uses_the_system_store(url, root):
    found = client.connection_url(Database(url), LAYOUT)
    assert found == (url if root is None else f"{url}{'&' if '?' in url else '?'}sslrootcert={root}")


# --- the client builder ----------------------------------------------------------------------------------------

def argv_of(command: str, tmp_path, stdin: str = "") -> list[str]:
    """What `command` runs, with runuser replaced by a program that writes its arguments as JSON."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "runuser").write_text("#!/usr/bin/python3\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    (bin_dir / "runuser").chmod(0o755)
    out = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


HOSTILE = "postgres://u@h/d?a=$(touch pwned)&b=`id`&c='\"\n;x"


def test_the_local_form_is_peer_authentication_over_the_socket(tmp_path):
    db = client.Client("mysite")
    assert argv_of(db.command("psql", "-c", "select 1"), tmp_path) == ["-u", "mysite", "--", "psql", "-c",
                                                                      "select 1", "--dbname=mysite"]
    assert argv_of(db.command("pg_dump", "--format=custom", dumper=True), tmp_path) == [
        "-u", "postgres", "--", "pg_dump", "--format=custom", "--dbname=mysite"]


def test_the_url_form_passes_the_url_and_passfile_as_data_whatever_they_hold(tmp_path):
    db = client.Client("mysite", HOSTILE, "/srv/mysite/shared/it's $(here)")
    for dumper in (False, True):
        assert argv_of(db.command("pg_dump", "--format=custom", dumper=dumper), tmp_path) == [
            "-u", "mysite", "--", "env", "PGPASSFILE=/srv/mysite/shared/it's $(here)", "pg_dump", "--format=custom",
            f"--dbname={HOSTILE}"]
    assert argv_of(db.command("pg_restore", "--list", dumper=True, connect=False), tmp_path)[-2:] == [
        "pg_restore", "--list"]
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("db", [client.Client("mysite"), client.Client("mysite", URL, LAYOUT.database_passfile)])
def test_every_database_command_goes_through_the_builder_and_passes_shellcheck(db):
    scripts = [release_commands.applied_migrations(db), release_commands.backup(LAYOUT, db, "n"),
               adopt_upload(LAYOUT, db, LAYOUT.upload("t", "x.dump"), "n"), restore_database(LAYOUT, db, "x.dump"),
               client.reach_probe(db).command]
    for script in scripts:
        assert_shellcheck_clean(script)
        assert "runuser -u" in script and ("PGPASSFILE" in script) == (db.url is not None)


def test_the_reach_probe_reads_back_who_is_connected_or_libpqs_error():
    probe = client.reach_probe(client.Client("mysite"))
    assert probe.parse("mysite@mysite\n", 0) == {"ok": True, "said": "mysite@mysite"}
    said = 'psql: error: connection to server at "10.0.0.3", port 5432 failed: FATAL:  password authentication failed'
    assert probe.parse(said + "\n", 2) == {"ok": False, "said": said}
    passfile = 'password retrieved from file "/srv/mysite/shared/database.pgpass"'
    assert probe.parse(f"{said}\n{passfile}\n", 2) == {"ok": False, "said": f"{said}; {passfile}"}


# --- provision -------------------------------------------------------------------------------------------------

def server(inv: Inventory) -> provisioning.Server:
    return provisioning.Server(inv, inv.hosts[0], (), lambda: None)


def test_with_a_url_the_server_gets_the_client_and_no_postgresql(tmp_path):
    local = Inventory(App("mysite"), (Host("10.0.0.2"),))
    remote = inventory(tmp_path, url=URL)
    assert "postgresql" in system.packages(server(local)).operations[0].names
    names = system.packages(server(remote)).operations[0].names
    assert "postgresql" not in names and "postgresql-client" in names
    assert postgres.database(server(local)).title == "postgresql"
    assert postgres.database(server(remote)).title == "database"


def test_the_passfile_escapes_what_libpq_reads_and_refuses_a_line_break():
    assert postgres.passfile("a:b\\c$(x)'") == "*:*:*:*:a\\:b\\\\c$(x)'\n"
    with pytest.raises(InventoryError):
        postgres.passfile("two\nlines")


def test_the_scheduled_backup_runs_the_builders_dump(tmp_path):
    step = backups.schedule(server(inventory(tmp_path, url=URL)))
    [command] = [op for op in step.operations if getattr(op, "path", "") == LAYOUT.backup_command]
    argv = json.loads(command.content)
    assert argv[:4] == ["runuser", "-u", "mysite", "--"] and argv[-1] == f"--dbname={URL}&sslrootcert={SYSTEM_CA_STORE}"
    assert command.mode == "600" and command.owner == "root"
    service = backups.service_file(server(inventory(tmp_path, url=URL)))
    assert "postgresql.service" not in service and "network-online.target" in service
