"""`fab rollback` without --migrate-back, against the fake server: which release it goes to, what it refuses, and
what a target that does not start leaves serving. (--migrate-back: test_migrations.py; what stays warm after a
rollback: test_standby.py; the check through nginx: test_served.py.)"""

from __future__ import annotations

import io

import pytest

from tasks.cli import rollback
from tasks.session.run import DeployError
from tests.orchestration import fake

OLD = "20261130T000000Z-ccccccc"
PREVIOUS = "20261201T000000Z-aaaaaaa"
LIVE = "20261202T000000Z-bbbbbbb"
NEW = ["notes.0001_initial"]
WITH_TAG = ["notes.0001_initial", "notes.0002_tag"]
HISTORY = [{"event": "live", "release": r, "previous": p} for p, r in ((None, OLD), (OLD, PREVIOUS), (PREVIOUS, LIVE))]


def a_server(running=(LIVE, PREVIOUS), applied=NEW, **changes) -> fake.FakeRemote:
    facts = fake.server(fake.release(OLD, NEW), fake.release(PREVIOUS, NEW), fake.release(LIVE, NEW), live=LIVE,
                        running=list(running), applied=applied, history=HISTORY)
    return fake.FakeRemote({**facts, **changes}).on("switch", report={"through_nginx": "200", "repaired": False})


def rolled_back(remote: fake.FakeRemote, to: str | None = None) -> tuple[str, str]:
    out = io.StringIO()
    target = rollback.rollback_on(fake.session(remote, out=out), to, False)
    return target, out.getvalue()


def refused(remote: fake.FakeRemote, to: str | None = None) -> str:
    with pytest.raises(DeployError) as error:
        rolled_back(remote, to)
    return str(error.value)


# --- refused, nothing changed ----------------------------------------------------------------------------------

def test_a_server_with_one_release_has_nothing_to_go_back_to():
    remote = fake.FakeRemote(fake.server(fake.release(LIVE, NEW), applied=NEW))
    assert refused(remote) == "there is no previous good release to go back to (see `fab releases`)"
    assert remote.scripts == []


def test_a_named_release_that_does_not_exist_is_refused_with_the_good_ones():
    remote = a_server()
    message = refused(remote, "20261101T000000Z-fffffff")
    assert message == (f"no good release '20261101T000000Z-fffffff'; good releases: {OLD}, {PREVIOUS}, {LIVE}")
    assert remote.scripts == []


def test_a_named_release_that_failed_says_it_is_in_failed():
    failed = "20261201T120000Z-ddddddd"
    remote = a_server(failed=[failed])
    assert f"no good release '{failed}' (it failed and is kept in failed/)" in refused(remote, failed)
    assert remote.scripts == []


def test_the_live_release_named_while_it_runs_is_refused():
    remote = a_server()
    assert refused(remote, LIVE) == f"{LIVE} is already live and running"
    assert remote.scripts == []


def test_a_database_ahead_of_the_target_is_refused_naming_migrate_back():
    remote = a_server(applied=WITH_TAG)
    remote.facts["releases"] = fake.server(fake.release(OLD, NEW), fake.release(PREVIOUS, NEW),
                                           fake.release(LIVE, WITH_TAG))["releases"]
    message = refused(remote)
    assert message.startswith(f"the database has 1 migration(s) that release {PREVIOUS} does not know: "
                              "notes.0002_tag. Its code would run against a schema it was not written for.")
    assert message.endswith(f"run: fab rollback --to {PREVIOUS} --migrate-back")
    assert not remote.ran("backup") and not remote.ran("reverse") and not remote.ran("start")


def test_migrations_that_cannot_be_read_refuse_the_rollback():
    remote = a_server(applied=None)
    assert refused(remote).startswith("could not read which migrations the database has applied")
    assert not remote.ran("start")


def test_a_target_whose_python_environment_is_gone_is_refused():
    remote = a_server(venvs=["req2"])
    assert refused(remote) == (f"release {PREVIOUS}'s Python environment is gone; deploy its commit again "
                               "(aaaaaaa) instead")
    assert not remote.ran("start")


# --- the target does not start ---------------------------------------------------------------------------------

def test_a_target_that_fails_to_start_leaves_the_live_release_serving_and_says_so():
    journal = (f"the instance mysite@{PREVIOUS}.service failed to start (systemd: failed, restarted 1 time(s)): it "
               "never answered, see its log below\n--- errors in its log:\nImportError: No module named 'gone'")
    remote = a_server().on("start", ok=False, output=journal)
    message = refused(remote)
    assert message.startswith(f"{PREVIOUS} did not go live; {LIVE} is still serving.\n")
    assert "failed to start" in message and "ImportError: No module named 'gone'" in message
    assert "rolled back" not in message


def test_a_live_release_that_is_not_running_and_fails_to_start_is_not_said_to_serve():
    remote = a_server(running=[PREVIOUS]).on("start", ok=False, output="the instance failed to start")
    message = refused(remote, LIVE)
    assert message.startswith(f"{LIVE} did not start; it is still the live release, and it is not running.\n")
    assert "still serving" not in message


# --- success ---------------------------------------------------------------------------------------------------

def test_a_rollback_to_a_warm_target_says_it_was_still_running():
    remote = a_server().on("start", report={"standby": True, "health": "200"})
    target, out = rolled_back(remote)
    assert target == PREVIOUS
    assert out.splitlines()[0] == f"rollback 10.0.0.2: {LIVE} -> {PREVIOUS}"
    assert (f"  changed   switch: {PREVIOUS} is live (was {LIVE}); healthy on its own socket: GET / -> 200, it was "
            "still running, nothing to start; the site answers GET / through nginx as 10.0.0.2 -> 200, from "
            f"{PREVIOUS}") in out
    assert f"rolled back to {PREVIOUS}: " in out


def test_a_rollback_to_a_cold_target_starts_it_and_does_not_call_it_warm():
    remote = a_server(running=[LIVE]).on("start", report={"health": "200"})
    target, out = rolled_back(remote, OLD)
    assert target == OLD
    assert f"  changed   switch: {OLD} is live (was {LIVE}); healthy on its own socket: GET / -> 200; the site" in out
    assert "still running" not in out


def test_a_live_release_that_is_not_running_is_started_again():
    remote = a_server(running=[PREVIOUS]).on("start", report={"health": "200"})
    target, out = rolled_back(remote, LIVE)
    assert target == LIVE
    assert out.splitlines()[0] == f"rollback 10.0.0.2: {LIVE} -> {LIVE} (it is live but not running: starting it)"
    assert f"  changed   switch: {LIVE} is live (was {LIVE}); healthy" in out
