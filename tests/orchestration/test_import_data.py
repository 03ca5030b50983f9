"""`fab import-data` against the fake server: the data goes in only into an empty database (or with --replace),
"imported" means the row counts read back from the server match the local ones, and what the server's database
held before a --replace, and holds after a failed load, is said from counts read back, never assumed."""

from __future__ import annotations

import io

import pytest

from tasks.cli import data
from tasks.connection.remote import RemoteError
from tasks.session.run import DeployError
from tests.orchestration import fake

LIVE = "20261201T000000Z-aaaaaaa"
ROWS = {"auth.user": 1, "notes.note": 3}
EMPTY = {"rows": {"auth.user": 0, "notes.note": 0}, "unknown": []}
BACKUP = "/srv/mysite/backups/20261205T090000Z-before-import.dump"


def a_dump(rows: dict | None = None) -> data.Dump:
    return data.Dump(fixture=b"\x1f\x8b...", rows=dict(ROWS if rows is None else rows), database="db.sqlite3",
                     media_root="")


def a_server(*count_answers: dict) -> fake.FakeRemote:
    """LIVE serving; the row counts answer `count_answers` in turn (the last one from then on)."""
    remote = fake.FakeRemote(fake.server(fake.release(LIVE)))
    *first, last = count_answers or (EMPTY,)
    remote.on("count", report=last)
    for answer in reversed(first):
        remote.on("count", report=answer, times=1)
    return remote


def imported(remote: fake.FakeRemote, dump: data.Dump | None = None, media=None, replace: bool = False) -> str:
    out = io.StringIO()
    data.import_to(fake.session(remote, out=out), dump or a_dump(), media, replace, True)
    return out.getvalue()


def refused(remote: fake.FakeRemote, **kwargs) -> str:
    with pytest.raises(DeployError) as error:
        imported(remote, **kwargs)
    return str(error.value)


# --- refused before anything is sent ---------------------------------------------------------------------------

def test_a_server_database_with_rows_is_left_alone_without_replace():
    remote = a_server({"rows": {"auth.user": 2, "notes.note": 0}, "unknown": []})
    message = refused(remote)
    assert message == ("the server's database already has rows in auth.user (2), so nothing was imported. To "
                       "replace everything in it with your local data (a backup is taken first), run again with "
                       "--replace")
    assert remote.uploads == {} and not remote.ran("loaddata") and not remote.ran("flush")


def test_a_model_the_live_code_does_not_have_is_refused_and_nothing_changes():
    remote = a_server({"rows": {"auth.user": 0}, "unknown": ["notes.note"]})
    message = refused(remote)
    assert message == (f"the live release {LIVE} has no model notes.note: deploy the code that has them, then "
                       "import again. Nothing was changed")
    assert remote.uploads == {} and not remote.ran("loaddata")


def test_rows_that_cannot_be_counted_stop_the_import_before_the_upload():
    remote = fake.FakeRemote(fake.server(fake.release(LIVE))).on(
        "count", ok=False, output="django.db.utils.OperationalError: connection refused")
    message = refused(remote)
    assert message.startswith("could not count the rows on the server:") and "connection refused" in message
    assert remote.uploads == {} and not remote.ran("loaddata")


def test_a_server_with_no_live_release_is_refused():
    remote = fake.FakeRemote(fake.server())
    assert refused(remote).startswith("no release is live on 10.0.0.2 yet: deploy first")
    assert remote.scripts == []


# --- the load --------------------------------------------------------------------------------------------------

def test_a_loaddata_that_fails_names_its_step_and_removes_the_upload():
    remote = a_server().on("loaddata", ok=False, output="django.core.serializers.base.DeserializationError: "
                                                        "Problem installing fixture")
    message = refused(remote)
    assert message.startswith("loading the data failed at its loaddata step. Read back, the server's database "
                              "holds what it held before: no row count changed.\n")
    assert "DeserializationError" in message and "The backup taken before" not in message
    assert remote.ran("remove")  # the uploaded fixture is removed all the same
    assert "THE ROW COUNTS DO NOT MATCH" not in message  # a load that failed is not compared with the dump


def test_a_replace_that_fails_after_its_backup_names_that_backup():
    remote = a_server({"rows": {"auth.user": 2, "notes.note": 5}, "unknown": []})
    remote.on("backup", report={"backup": BACKUP}).on("flush", ok=False, output="CommandError: Database "
                                                                                  "couldn't be flushed")
    message = refused(remote, replace=True)
    assert message.startswith(f"loading the data failed at its flush step. The backup taken before is {BACKUP}.")
    assert remote.ran("remove")


def test_row_counts_that_differ_after_the_load_are_named_loudly():
    remote = a_server(EMPTY, {"rows": {"auth.user": 1, "notes.note": 2}, "unknown": []})
    message = refused(remote)
    assert message == ("THE ROW COUNTS DO NOT MATCH after loading the data: notes.note: 3 here, 2 on the server. "
                       "Look at the data on the server (fab manage -- shell) before using it")


def test_row_counts_that_cannot_be_read_back_are_not_called_a_match():
    remote = a_server()
    remote.on("count", ok=False, output="OperationalError: server closed the connection")
    remote.on("count", report=EMPTY, times=1)
    message = refused(remote)
    assert message.startswith("THE ROW COUNTS DO NOT MATCH after loading the data: could not count them:")
    assert "server closed the connection" in message


def test_a_load_with_matching_counts_reports_them_and_the_backup_of_the_replaced_data():
    remote = a_server({"rows": {"auth.user": 1, "notes.note": 9}, "unknown": []}, {"rows": ROWS, "unknown": []})
    remote.on("backup", report={"backup": BACKUP})
    out = imported(remote, replace=True)
    assert ("  changed   data: 4 rows from db.sqlite3, the same count read back from the server for each model:\n"
            "            auth.user: 1\n            notes.note: 3\n"
            "            before the import (read back): of the models imported, the server's database held 10 "
            f"row(s): auth.user: 1, notes.note: 9; backup taken first: {BACKUP}\n") in out
    # With --replace every model is counted, before and after: flush empties them all.
    counts = [s for s in remote.scripts if "count" in fake.steps_of(s)]
    assert len(counts) == 2 and all('"every": true' in s for s in counts)


# --- --replace: what the server held, read back --------------------------------------------------------------

def test_a_replace_of_a_database_already_emptied_says_it_held_no_rows():
    """The database was flushed before (a --replace whose load failed, `fab manage -- flush`): the import does
    not claim it replaced data."""
    remote = a_server(EMPTY, {"rows": ROWS, "unknown": []}).on("backup", report={"backup": BACKUP})
    out = imported(remote, replace=True)
    assert ("before the import (read back): of the models imported, the server's database held no rows; backup "
            f"taken first: {BACKUP}") in out
    assert "previous data" not in out and "emptied too" not in out
    assert remote.ran("flush") and remote.ran("loaddata")


def test_a_replace_names_the_rows_of_other_models_it_emptied_and_not_those_django_makes_again():
    before = {"auth.user": 0, "notes.note": 2, "notes.comment": 5, "contenttypes.contenttype": 20}
    after = {"auth.user": 1, "notes.note": 3, "notes.comment": 0, "contenttypes.contenttype": 20}
    remote = a_server({"rows": before, "unknown": []}, {"rows": after, "unknown": []})
    remote.on("backup", report={"backup": BACKUP})
    out = imported(remote, replace=True)
    assert ("of the models imported, the server's database held 2 row(s): notes.note: 2; of models your data "
            "has none of, 5 row(s): notes.comment: 5, emptied too; backup taken first") in out
    assert "contenttypes" not in out


def test_a_replace_whose_load_fails_after_the_flush_says_the_database_is_empty_now():
    remote = a_server({"rows": {"auth.user": 2, "notes.note": 5}, "unknown": []}, EMPTY)
    remote.on("backup", report={"backup": BACKUP}).on("loaddata", ok=False, output="IntegrityError: duplicate key")
    message = refused(remote, replace=True)
    assert message.startswith(f"loading the data failed at its loaddata step. The backup taken before is {BACKUP}. "
                              "Read back, the server's database now holds auth.user: 0 (2 before), notes.note: 0 "
                              "(5 before); `fab restore 20261205T090000Z-before-import.dump` puts back what it "
                              "held.\n")
    assert "IntegrityError" in message


def test_a_database_that_cannot_be_read_after_a_failed_load_is_said_to_be_unknown():
    remote = a_server({"rows": {"auth.user": 2, "notes.note": 5}, "unknown": []})
    remote.on("count", ok=False, output="OperationalError: the database system is shutting down")
    remote.on("count", report={"rows": {"auth.user": 2, "notes.note": 5}, "unknown": []}, times=1)
    remote.on("backup", report={"backup": BACKUP}).on("flush", ok=False, output="CommandError: flush failed")
    message = refused(remote, replace=True)
    assert ("What the server's database holds now could not be read back (OperationalError: the database system is "
            "shutting down).") in message
    assert "no row count changed" not in message


# --- media files -----------------------------------------------------------------------------------------------

def a_media_dir(tmp_path):
    (tmp_path / "covers").mkdir()
    (tmp_path / "covers" / "a.png").write_bytes(b"png")
    (tmp_path / "b.txt").write_text("b")
    return tmp_path


def test_media_files_the_server_cannot_unpack_are_reported_as_not_uploaded(tmp_path):
    remote = a_server().on("media", ok=False, output="refused: covers/../../etc climbs out of the media directory")
    message = refused(remote, dump=a_dump({}), media=a_media_dir(tmp_path))
    assert message.startswith("uploading the media files failed; no partial file was left, and the upload was "
                              "removed:\n")
    assert "climbs out" in message
    assert remote.ran("remove")


def test_a_media_upload_the_server_refuses_changes_no_media_file(tmp_path):
    remote = a_server()
    remote.put_error = RemoteError("Permission denied")
    message = refused(remote, dump=a_dump({}), media=a_media_dir(tmp_path))
    assert message == "Permission denied; the partial upload was removed, no media file was changed"
    assert not remote.ran("media")


def test_media_files_unpacked_are_counted_as_the_server_reported(tmp_path):
    remote = a_server().on("media", report={"media": {"added": 1, "replaced": 0, "kept": 1}})
    out = imported(remote, dump=a_dump({}), media=a_media_dir(tmp_path))
    assert ("  changed   media: 1 added, 0 replaced, 1 kept (the server's own, not overwritten without --replace) "
            "in /srv/mysite/shared/media") in out
