"""Provision's database step with `database.url` against a fake server: what it says about the password (given,
kept, none) and the connection, and how a refused connection fails the step in libpq's own words."""

from __future__ import annotations

import io

import pytest

from tasks import provisioning
from tasks.inventory import Database, Inventory, App, Host
from tasks.layout import Layout
from tasks.facts.steps import PathState
from tasks.provisioning import postgres
from tasks.session.runner import Reporter, StepFailed, apply
from tests.orchestration.fake import StepRemote

LAYOUT = Layout("mysite")
URL = "postgres://mysite@10.0.0.3/mysite?sslmode=require"
INVENTORY = Inventory(App("mysite"), (Host("10.0.0.2"),), database=Database(URL, password_env="MYSITE_DB_PASSWORD"))
REFUSED = ('psql: error: connection to server at "10.0.0.3", port 5432 failed: FATAL:  password authentication '
           'failed for user "mysite"')
PASSFILE = PathState("regular file", "600", "mysite", "mysite", "0" * 64)


def provision(monkeypatch, facts, password=None, refusal=""):
    if password is None:
        monkeypatch.delenv("MYSITE_DB_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("MYSITE_DB_PASSWORD", password)
    step = postgres.database(provisioning.Server(INVENTORY, INVENTORY.hosts[0], (), lambda: None))
    remote, out = StepRemote(facts, refusal, fails_on="psql", code=2), io.StringIO()
    apply(remote, [step], Reporter(out, terminal=False))
    return out.getvalue(), remote.scripts


def reached(ok=True):
    return {"database:reach": {"ok": ok, "said": "mysite@mysite" if ok else REFUSED}}


def test_a_given_password_is_written_owner_only_and_a_connection_made_with_it(monkeypatch):
    said, scripts = provision(monkeypatch, reached(False), password="s3cret: $(x)")
    assert "changed   database" in said and "password from MYSITE_DB_PASSWORD" in said
    assert "a connection was made with it" in said
    [script] = scripts
    assert "s3cret" not in script  # it travels base64-encoded, and is never shown
    assert LAYOUT.database_passfile in script and "mysite:mysite" in script and "chmod 600" in script


def test_without_the_variable_the_password_on_the_server_is_kept_and_says_so(monkeypatch):
    said, scripts = provision(monkeypatch, {**reached(), f"path:{LAYOUT.database_passfile}": PASSFILE})
    assert scripts == []
    assert ("ok        database: connected as mysite@mysite; password kept in "
            f"{LAYOUT.database_passfile} (MYSITE_DB_PASSWORD is not set)") in said


def test_without_the_variable_nor_a_passfile_it_says_there_is_no_password(monkeypatch):
    said, _ = provision(monkeypatch, reached())
    assert "no password on the server (MYSITE_DB_PASSWORD is not set)" in said


def test_a_wrong_password_fails_the_step_in_libpqs_words_and_says_where_the_password_comes_from(monkeypatch):
    with pytest.raises(StepFailed) as failed:
        provision(monkeypatch, {**reached(False), f"path:{LAYOUT.database_passfile}": PASSFILE}, refusal=REFUSED)
    message = str(failed.value)
    assert "step 'database' failed" in message and "password authentication failed" in message
    assert "MYSITE_DB_PASSWORD" in message


def test_a_new_password_the_database_refuses_fails_the_step(monkeypatch):
    with pytest.raises(StepFailed) as failed:
        provision(monkeypatch, {**reached(False), f"path:{LAYOUT.database_passfile}": PASSFILE}, password="wrong",
                  refusal=REFUSED)
    assert "password authentication failed" in str(failed.value)
