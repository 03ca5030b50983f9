"""`fab restore` against the fake server: every way it stops says what the server shows afterwards (the
maintenance flag and the migrations read back), never what the restore meant to do."""

from __future__ import annotations

import io

import pytest

from tasks.cli import backups
from tasks.commands import backup as commands
from tasks.layout import Layout
from tasks.connection.remote import RemoteError
from tasks.session.run import DeployError, Task
from tests.orchestration import fake

LIVE = "20261201T000000Z-aaaaaaa"
NAME = "20261205T080000Z-manual.dump"
FRESH = "/srv/mysite/backups/20261205T090000Z-before-restore.dump"
NEW = ["notes.0001_initial"]
WITH_TAG = ["notes.0001_initial", "notes.0002_tag"]
LAYOUT = Layout("mysite")


def a_server(maintenance: bool = False, flag_after: bool | None = False) -> fake.FakeRemote:
    """LIVE serving, the backup before the restore succeeding; the maintenance flag reads back as
    `flag_after` (None: the read-back fails)."""
    remote = fake.FakeRemote(fake.server(fake.release(LIVE, NEW), applied=NEW, maintenance=maintenance))
    remote.on("backup", report={"backup": FRESH})
    if flag_after is None:
        remote.on("readback", ok=False, output="sudo: a terminal is required")
    else:
        remote.on("readback", report={"maintenance": flag_after})
    return remote


def restore(remote: fake.FakeRemote, name: str | None = NAME, upload: tuple[str, bytes] | None = None,
            out: io.StringIO | None = None) -> Task:
    job = Task("restore", interrupted=backups.RESTORE_INTERRUPTED)
    backups.restore_on(fake.session(remote, out=out), name, upload, job)
    return job


def failed(remote: fake.FakeRemote, **kwargs) -> str:
    with pytest.raises(DeployError) as error:
        restore(remote, **kwargs)
    return str(error.value)


def interrupted(remote: fake.FakeRemote, **kwargs) -> str:
    job = Task("restore", interrupted=backups.RESTORE_INTERRUPTED)
    with pytest.raises(KeyboardInterrupt):
        backups.restore_on(fake.session(remote), kwargs.get("name", NAME), kwargs.get("upload"), job)
    assert job.interrupted != backups.RESTORE_INTERRUPTED  # what is true replaced the default words
    return job.interrupted


# --- before anything changed -----------------------------------------------------------------------------------

def test_a_backup_name_the_server_does_not_have_changes_nothing():
    remote = a_server().on("exists", ok=False, output=f"there is no backup {NAME} in /srv/mysite/backups/")
    message = failed(remote)
    assert message.startswith(f"there is no backup {NAME} in /srv/mysite/backups/")
    assert message.endswith("see the names `fab backups` lists; nothing was changed")
    assert not remote.ran("backup") and not remote.ran("maintenance") and not remote.ran("restore")


def test_an_upload_the_server_refuses_restores_nothing_and_removes_the_partial_file():
    remote = a_server()
    remote.put_error = RemoteError("Permission denied")
    message = failed(remote, name=None, upload=("site.dump", b"PGDMP..."))
    assert message == "Permission denied; the partial upload was removed, nothing was restored"
    assert remote.sent("rm -f")  # the .part
    assert not remote.ran("adopt") and not remote.ran("backup") and not remote.ran("restore")


def test_an_uploaded_file_pg_restore_cannot_read_is_not_adopted_and_nothing_is_restored():
    remote = a_server().on("adopt", ok=False, output="pg_restore: error: input file does not appear to be a "
                                                      "valid archive")
    message = failed(remote, name=None, upload=("notes.sql", b"CREATE TABLE"))
    assert message.startswith("nothing was restored: ") and "does not appear to be a valid archive" in message
    assert not remote.ran("backup") and not remote.ran("maintenance") and not remote.ran("restore")


def test_a_failed_backup_before_the_restore_restores_nothing_and_leaves_maintenance_alone():
    remote = a_server().on("backup", ok=False, output="pg_dump: error: No space left on device")
    message = failed(remote)
    assert message.startswith("the backup before the restore failed, so nothing was restored:")
    assert "No space left on device" in message
    assert not remote.ran("maintenance") and not remote.ran("restore")


# --- pg_restore fails ------------------------------------------------------------------------------------------

def a_failing_restore(flag_after: bool | None, maintenance: bool = False) -> fake.FakeRemote:
    return a_server(maintenance, flag_after).on("restore", ok=False, output="pg_restore: error: could not execute "
                                                                            "query: ERROR: permission denied")


def test_a_failed_pg_restore_says_the_database_is_unchanged_and_maintenance_is_read_back_off():
    remote = a_failing_restore(flag_after=False)
    message = failed(remote)
    assert message.startswith(f"pg_restore of {NAME} failed; it ran in one transaction, so the database is "
                              "unchanged; maintenance mode is off again (read back from the server: off). The "
                              f"backup taken just before is {FRESH}.")
    assert "permission denied" in message
    last = [s for s in remote.scripts if "maintenance" in fake.steps_of(s)][-1]
    assert commands.maintenance_off(LAYOUT) in last and "readback" in fake.steps_of(last)


def test_a_failed_pg_restore_whose_flag_cannot_be_read_back_does_not_claim_maintenance_is_off():
    message = failed(a_failing_restore(flag_after=None))
    assert "turning maintenance mode off could not be confirmed: run `fab maintenance off`" in message
    assert "off again" not in message


def test_a_failed_pg_restore_whose_flag_is_still_there_says_still_on():
    message = failed(a_failing_restore(flag_after=True))
    assert "maintenance mode is STILL ON (read back from the server): run `fab maintenance off`" in message
    assert "off again" not in message


def test_a_failed_pg_restore_with_maintenance_already_on_leaves_it_on_and_does_not_touch_it():
    remote = a_failing_restore(flag_after=True, maintenance=True)
    message = failed(remote)
    assert message.startswith(f"pg_restore of {NAME} failed; it ran in one transaction, so the database is "
                              f"unchanged. The backup taken just before is {FRESH}.")
    assert not remote.ran("maintenance")  # neither on nor off: it was the operator's


def test_a_failed_pg_restore_of_an_upload_removes_the_dump_it_adopted():
    remote = a_failing_restore(flag_after=False).on(
        "adopt", report={"backup": "/srv/mysite/backups/20261205T085900Z-uploaded.dump"})
    message = failed(remote, name=None, upload=("site.dump", b"PGDMP..."))
    assert ("The uploaded dump 20261205T085900Z-uploaded.dump was removed from /srv/mysite/backups/ (your local "
            "file is unchanged).") in message
    assert remote.ran("remove")


# --- Ctrl-C, at each stage ---------------------------------------------------------------------------------------

def test_ctrl_c_during_the_upload_restores_nothing_and_reads_the_flag_back():
    remote = a_server(flag_after=False)
    remote.put_error = KeyboardInterrupt()
    said = interrupted(remote, name=None, upload=("site.dump", b"PGDMP..."))
    assert said == ("nothing was restored and this restore did not turn maintenance mode on (read back from the "
                    "server: off).")
    assert not remote.ran("adopt") and not remote.ran("backup")


def test_ctrl_c_while_the_upload_is_checked_restores_nothing():
    remote = a_server(flag_after=False).on("adopt", interrupt=True)
    said = interrupted(remote, name=None, upload=("site.dump", b"PGDMP..."))
    assert said.startswith("nothing was restored and this restore did not turn maintenance mode on (read back "
                           "from the server: off).")
    assert not remote.ran("backup")


def test_ctrl_c_during_the_backup_with_maintenance_on_before_says_it_is_still_on_as_it_was():
    remote = a_server(maintenance=True, flag_after=True).on("backup", interrupt=True)
    said = interrupted(remote)
    assert said.startswith("nothing was restored and this restore did not turn maintenance mode on (read back "
                           "from the server: on, as it was before).")
    assert "-before-restore.dump) may still finish on the server" in said


def test_ctrl_c_during_the_backup_with_a_flag_that_cannot_be_read_claims_nothing_about_it():
    remote = a_server(flag_after=None).on("backup", interrupt=True)
    said = interrupted(remote)
    assert said.startswith("nothing was restored and this restore did not turn maintenance mode on. ")
    assert "read back" not in said


def test_ctrl_c_while_maintenance_mode_is_turned_on_turns_it_off_and_reads_it_back():
    remote = a_server(flag_after=False).on("maintenance", interrupt=True, times=1)
    said = interrupted(remote)
    assert said == ("nothing was restored (pg_restore had not started); maintenance mode is off again (read back "
                    f"from the server: off). The backup taken just before is {FRESH}.")
    assert not remote.ran("restore")


def test_ctrl_c_while_maintenance_mode_is_turned_on_and_it_stays_on_says_still_on():
    remote = a_server(flag_after=True).on("maintenance", interrupt=True, times=1)
    said = interrupted(remote)
    assert said.startswith("nothing was restored (pg_restore had not started); maintenance mode is STILL ON (read "
                           "back from the server): run `fab maintenance off`.")


def test_ctrl_c_while_pg_restore_runs_with_the_flag_read_back_off_warns_that_visitors_see_the_change():
    remote = a_server(flag_after=False).on("restore", interrupt=True)
    said = interrupted(remote)
    assert said.startswith(f"the restore of {NAME} may be half-way")
    assert "Maintenance mode is OFF (read back from the server): visitors may see the data change." in said
    assert "stays on" not in said


def test_ctrl_c_while_pg_restore_runs_with_an_unreadable_flag_says_it_could_not_be_read():
    remote = a_server(flag_after=None).on("restore", interrupt=True)
    said = interrupted(remote)
    assert "Maintenance mode was left on; it could not be read back." in said
    assert "(read back from the server" not in said


def test_ctrl_c_during_the_schema_check_says_the_backup_was_restored_and_turns_maintenance_off():
    remote = a_server(flag_after=False)
    remote.gather = _interrupt_second_applied_read(remote)  # the state's read goes through, the one after not
    said = interrupted(remote)
    assert said == (f"{NAME} was restored (the schema check after it was cut short); maintenance mode is off "
                    f"again (read back from the server: off). The backup taken just before is {FRESH}.")



def test_ctrl_c_during_the_schema_check_with_an_unreadable_flag_does_not_call_maintenance_off():
    remote = a_server(flag_after=None)
    remote.gather = _interrupt_second_applied_read(remote)
    said = interrupted(remote)
    assert said.startswith(f"{NAME} was restored (the schema check after it was cut short); turning maintenance "
                           "mode off could not be confirmed: run `fab maintenance off`.")
    assert "off again" not in said


def _interrupt_second_applied_read(remote: fake.FakeRemote):
    gather, seen = remote.gather, []

    def read(probes):
        probes = list(probes)
        if any(p.key == "applied" for p in probes):
            seen.append(1)
            if len(seen) == 2:
                raise KeyboardInterrupt
        return gather(probes)
    return read


def test_ctrl_c_while_maintenance_mode_is_turned_off_at_the_end_is_not_called_off():
    remote = a_server(flag_after=False)
    remote.on("maintenance", interrupt=True).on("maintenance", times=1)  # on goes through; off is cut
    with pytest.raises(DeployError) as error:
        restore(remote)
    assert str(error.value) == (f"{NAME} was restored, but turning maintenance mode off could not be confirmed: "
                                "run `fab maintenance off`")


# --- success ---------------------------------------------------------------------------------------------------

def test_a_restore_reads_the_schema_and_the_flag_back():
    remote = a_server(flag_after=False)
    out = io.StringIO()
    restore(remote, out=out)
    text = out.getvalue()
    assert f"  changed   backup: {FRESH}: the database as it was" in text
    assert f"  changed   restore: {NAME} restored into the database mysite" in text
    assert f"  ok        schema: the restored migrations match the live release {LIVE}'s (1)" in text
    assert "  changed   maintenance: off (read back from the server): visitors reach the app again" in text
    assert remote.reads[-1] == ["applied"]


def test_a_restored_database_from_newer_code_is_a_warning_with_what_it_has():
    remote = a_server(flag_after=False).then_facts(applied=WITH_TAG)
    out = io.StringIO()
    restore(remote, out=out)
    assert ("  WARNING   schema: the restored database has 1 migration(s) the live code does not know "
            "(notes.0002_tag)") in out.getvalue()
    assert "match" not in out.getvalue()


def test_a_restored_database_whose_migrations_cannot_be_read_says_so():
    remote = a_server(flag_after=False).then_facts(applied=None)
    out = io.StringIO()
    restore(remote, out=out)
    assert "WARNING   schema: could not read which migrations the restored database has applied" in out.getvalue()


def test_a_restore_whose_flag_is_still_on_at_the_end_fails_saying_restored_but_still_on():
    remote = a_server(flag_after=True)
    with pytest.raises(DeployError) as error:
        restore(remote)
    assert str(error.value) == (f"{NAME} was restored, but maintenance mode is STILL ON (read back from the "
                                "server): run `fab maintenance off`")
