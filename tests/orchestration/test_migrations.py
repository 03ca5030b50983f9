"""Migration-aware rollback, the undo of a failed deploy and `fab status`'s schema line, against the fake
server: each branch asserts what the migrations table showed afterwards, never what was meant to happen."""

from __future__ import annotations

import io

import pytest

from tasks.cli import deploy, rollback as rollback_task, status
from tasks.layout import Layout
from tasks.session.run import DeployError
from tests.orchestration import fake

OLD = "20261201T000000Z-aaaaaaa"
LIVE = "20261202T000000Z-bbbbbbb"
FAILED = "20261203T000000Z-ccccccc"
NEW = ["notes.0001_initial"]
WITH_TAG = ["notes.0001_initial", "notes.0002_tag"]


def failed_listing(*releases_) -> str:
    return "".join(f"{r.id}\t{r.to_json().replace(chr(10), '')}\n" for r in releases_)


def rollback(remote: fake.FakeRemote, to: str | None, out: io.StringIO, migrate_back: bool = True) -> str:
    return rollback_task.rollback_on(fake.session(remote, out=out), to, migrate_back)


# --- fab rollback --migrate-back ---------------------------------------------------------------------------------

def test_migrate_back_when_the_live_code_lacks_the_file_uses_the_release_that_has_it():
    """The database has notes.0002 (a deploy that failed after migrating); neither the live release nor the
    target has its file: the reversal runs with the failed release's code, in failed/, and is read back."""
    remote = fake.FakeRemote({**fake.server(fake.release(OLD, NEW), fake.release(LIVE, NEW), live=LIVE,
                                            running=[LIVE], applied=WITH_TAG),
                              "failed_releases": failed_listing(fake.release(FAILED, WITH_TAG, status="failed"))})
    remote.on("backup", report={"backup": f"/srv/mysite/backups/{LIVE}-before-rollback.dump"})
    remote.on("reverse", report={"reverse_plan": ["notes.0002_tag"], "unapplied": "notes.0002_tag"})
    remote.then_facts().then_facts(applied=NEW)  # state, failed/'s metadata, then the read-back
    out = io.StringIO()
    assert rollback(remote, LIVE, out) == LIVE
    text = out.getvalue()
    assert f"the live release {LIVE} does not have the files of these migrations" in text
    assert f"reversing with release {FAILED}'s code (/srv/mysite/failed/{FAILED})" in text
    assert "1 reversed (notes.0002_tag), read back from the database, after a backup" in text
    reverse_script = next(s for s in remote.scripts if "reverse" in fake.steps_of(s))
    assert f"WorkingDirectory=/srv/mysite/failed/{FAILED}" in reverse_script
    assert f"/srv/mysite/releases/{LIVE}/.venv" not in reverse_script
    assert not remote.ran("switch")  # --to the live release: it stays live, nothing to switch


def test_migrate_back_with_no_release_that_has_the_file_says_so_and_changes_nothing():
    remote = fake.FakeRemote({**fake.server(fake.release(OLD, NEW), fake.release(LIVE, NEW), live=LIVE,
                                            applied=WITH_TAG), "failed_releases": ""})
    with pytest.raises(DeployError) as failed:
        rollback(remote, OLD, io.StringIO())
    assert "no release on the server has the files of notes.0002_tag" in str(failed.value)
    assert not remote.ran("backup") and not remote.ran("reverse") and not remote.ran("switch")


def test_a_reversal_that_leaves_the_migration_applied_says_still_applied_and_does_not_switch():
    """The bug on real servers: the reverse command exited 0 and the migration was still there."""
    remote = fake.FakeRemote(fake.server(fake.release(OLD, NEW), fake.release(LIVE, WITH_TAG), live=LIVE,
                                         running=[LIVE, OLD], applied=WITH_TAG))
    remote.on("backup", report={"backup": "/srv/mysite/backups/x.dump"})
    remote.on("reverse", report={"reverse_plan": ["notes.0002_tag"]})  # "succeeds"
    remote.then_facts(applied=WITH_TAG)  # ... and the table still has it
    out = io.StringIO()
    with pytest.raises(DeployError) as failed:
        rollback(remote, OLD, out)
    message = str(failed.value)
    assert "0 reversed; still applied (read back from the database): notes.0002_tag" in message
    assert "succeeded, yet the database still has them" in message
    assert f"Nothing was switched: {LIVE} is still serving" in message
    assert "reversed (notes.0002_tag)" not in out.getvalue()
    assert not remote.ran("switch")


def test_a_reversal_that_fails_names_the_migration_and_django_s_reason():
    remote = fake.FakeRemote(fake.server(fake.release(OLD, NEW), fake.release(LIVE, WITH_TAG + ["notes.0003_x"]),
                                         live=LIVE, applied=WITH_TAG + ["notes.0003_x"]))
    remote.on("backup", report={"backup": "/srv/mysite/backups/x.dump"})
    remote.on("reverse", ok=False, report={"unapplied": "notes.0003_x", "reverse_failed": "notes.0002_tag",
                                           "why": "ValueError: Cannot query \"Permission object (129)\""})
    remote.then_facts(applied=WITH_TAG)
    with pytest.raises(DeployError) as failed:
        rollback(remote, OLD, io.StringIO())
    message = str(failed.value)
    assert "1 reversed: notes.0003_x; still applied (read back from the database): notes.0002_tag" in message
    assert 'Reversing notes.0002_tag failed: ValueError: Cannot query "Permission object (129)"' in message
    assert not remote.ran("switch")


def test_a_database_unreadable_after_the_reversal_is_not_reported_as_reversed():
    remote = fake.FakeRemote(fake.server(fake.release(OLD, NEW), fake.release(LIVE, WITH_TAG), live=LIVE,
                                         applied=WITH_TAG))
    remote.on("backup", report={"backup": "/srv/mysite/backups/x.dump"})
    remote.then_facts(applied=None)
    with pytest.raises(DeployError) as failed:
        rollback(remote, OLD, io.StringIO())
    assert "could not read the migrations table after reversing notes.0002_tag" in str(failed.value)
    assert not remote.ran("switch")


def test_squashed_migrations_do_not_block_a_plain_rollback_or_take_a_backup():
    squash = {"w.0001_squashed_0002": ["w.0001_initial", "w.0002_a"]}
    known = ["w.0001_initial", "w.0002_a", "w.0001_squashed_0002"]
    old, live = fake.release(OLD, known), fake.release(LIVE, known)
    old.replaces = live.replaces = squash
    remote = fake.FakeRemote(fake.server(old, live, live=LIVE, running=[LIVE, OLD], applied=known))
    out = io.StringIO()
    assert rollback(remote, None, out, migrate_back=False) == OLD
    assert "migrations" not in out.getvalue() and "WARNING" not in out.getvalue()
    assert not remote.ran("backup") and not remote.ran("reverse")


# --- a deploy that fails after migrating --------------------------------------------------------------------------

def a_failed_start(remote: fake.FakeRemote) -> fake.FakeRemote:
    remote.on("checks", report={"migrations": WITH_TAG, "venv": "reused", "warnings": []})
    remote.on("backup", report={"backup": "/srv/mysite/backups/x.dump"})
    remote.on("start", ok=False, output="ImportError: crash on purpose")
    return remote


def test_a_release_that_fails_at_start_undoes_its_migrations_with_its_own_code_and_reads_them_back():
    remote = a_failed_start(fake.FakeRemote(fake.server(fake.release(LIVE, NEW), applied=NEW)))
    remote.on("reverse", report={"reverse_plan": ["notes.0002_tag"], "unapplied": "notes.0002_tag"})
    remote.then_facts(applied=WITH_TAG).then_facts(applied=NEW)  # after the migrate; after the reversal
    with pytest.raises(DeployError) as failed:
        deploy.deploy_to(fake.session(remote), fake.a_source())
    message = str(failed.value)
    assert ("the 1 migration(s) it applied were reversed (read back from the database: notes.0002_tag)"
            in message)
    reverse_script = next(s for s in remote.scripts if "reverse" in fake.steps_of(s))
    assert "WorkingDirectory=/srv/mysite/releases/" in reverse_script and LIVE not in reverse_script
    assert "migrate --noinput notes" not in "\n".join(remote.scripts)  # no per-app `migrate APP TARGET`


def test_a_release_whose_migrations_cannot_be_undone_says_which_failed_why_and_what_is_still_applied():
    remote = a_failed_start(fake.FakeRemote(fake.server(fake.release(LIVE, NEW), applied=NEW)))
    remote.on("reverse", ok=False, report={"reverse_failed": "notes.0002_tag",
                                           "why": "ValueError: Cannot query \"Permission object (129)\""})
    remote.then_facts(applied=WITH_TAG).then_facts(applied=WITH_TAG)
    with pytest.raises(DeployError) as failed:
        deploy.deploy_to(fake.session(remote), fake.a_source())
    message = str(failed.value)
    assert "could not all be reversed" in message and "were reversed" not in message
    assert "still applied (read back from the database): notes.0002_tag" in message
    assert 'Reversing notes.0002_tag failed: ValueError: Cannot query "Permission object (129)"' in message
    assert f"`fab rollback --to {LIVE} --migrate-back`" in message and "migrate --noinput" not in message


# --- fab status ----------------------------------------------------------------------------------------------------

def status_facts(applied, known=NEW) -> dict:
    facts = fake.server(fake.release(LIVE, known), applied=applied)
    facts.update(now=1_800_000_000, units={f"mysite@{LIVE}.service": "active/running",
                                           "nginx.service": "active/running", "postgresql.service": "active/exited",
                                           "unattended-upgrades.service": "active/running"},
                 timers=[status.Timer("apt-daily-upgrade.timer", "active", None, 1_800_000_100, "success")],
                 health=status.Health("200", 0, True, Layout("mysite").socket(LIVE)), certificate=None, disk=[status.Disk("/", 10, 8 << 20)],
                 memory={"MemTotal": 1000, "MemAvailable": 800}, newest_backup=None, updates=(0, 0),
                 unattended=True, reboot=None, **{"database:reach": {"ok": True, "said": "mysite@mysite"}})
    return facts


def run_status(facts: dict) -> tuple[int, str]:
    out = io.StringIO()
    code = status.status_on(fake.session(fake.FakeRemote(facts), out=out))
    return code, out.getvalue()


def test_status_is_all_well_when_the_schema_matches_the_live_code():
    code, text = run_status(status_facts(NEW))
    assert code == 0 and "  ok        schema: the 1 applied migrations match" in text, text


def test_status_fails_when_the_database_is_ahead_of_the_live_code():
    code, text = run_status(status_facts(WITH_TAG))
    assert code == 2, text
    assert (f"  FAIL      schema: the database has 1 migration(s) the live release {LIVE} does not know "
            "(notes.0002_tag)") in text
    assert f"`fab rollback --to {LIVE} --migrate-back`" in text and "all well" not in text


def test_status_fails_when_the_database_is_behind_the_live_code():
    """A restore of an older dump: the live code expects a column the database does not have."""
    code, text = run_status(status_facts(NEW, known=WITH_TAG))
    assert code == 2, text
    assert f"  FAIL      schema: the database lacks 1 migration(s) the live release {LIVE} has (notes.0002_tag)" in text
    assert "`fab manage -- migrate`" in text


def test_status_says_it_could_not_read_the_migrations_never_none():
    code, text = run_status(status_facts(None))
    assert code == 2 and "FAIL      schema: could not read which migrations the database has applied" in text
