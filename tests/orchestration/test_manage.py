"""`fab manage` against the fake server: a failed command's output is read for a hint, after it was shown."""

from __future__ import annotations

from tasks.cli import operate
from tasks.connection.remote import Result
from tests.orchestration import fake

LIVE = "20261201T000000Z-aaaaaaa"
DUPLICATE = ("Traceback (most recent call last):\n  File \"/srv/mysite/releases/r/manage.py\", line 22, in <module>\n"
             "django.db.utils.IntegrityError: Problem installing fixture '/srv/mysite/releases/.upload-1-data.json': "
             "Could not load auth.Permission(pk=1): duplicate key value violates unique constraint "
             "\"auth_permission_content_type_id_codename_01ab375a_uniq\"\n"
             "DETAIL:  Key (content_type_id, codename)=(1, add_logentry) already exists.\n")


def manage(remote: fake.FakeRemote, *args: str) -> int:
    return operate.manage_on(fake.session(remote), list(args), terminal=False, file=("data.json", b"[]"))


def test_a_loaddata_of_django_s_own_rows_ends_with_the_exclude_hint_on_stderr(capsys):
    remote = fake.FakeRemote(fake.server(fake.release(LIVE)))
    remote.attached_answer = Result("", DUPLICATE, 1)
    assert manage(remote, "loaddata", "data.json") == 1  # the command's status is fab's
    out, err = capsys.readouterr()
    assert out == ""  # what the command printed to stdout stays its own
    (hint,) = [line for line in err.splitlines() if line.startswith("hint: ")]
    assert "--exclude auth.permission --exclude contenttypes" in hint
    assert remote.sent("rm -f")  # the uploaded fixture is removed all the same


def test_the_same_words_with_a_terminal_reach_the_hint_through_stdout(capsys):
    remote = fake.FakeRemote(fake.server(fake.release(LIVE)))
    remote.attached_answer = Result(DUPLICATE.replace("\n", "\r\n"), "", 1)  # a pty merges stderr into stdout
    assert operate.manage_on(fake.session(remote), ["loaddata", "x.json"], terminal=True) == 1
    assert "--exclude auth.permission --exclude contenttypes" in capsys.readouterr().err


def test_a_command_that_succeeds_or_fails_otherwise_gets_no_hint(capsys):
    remote = fake.FakeRemote(fake.server(fake.release(LIVE)))
    remote.attached_answer = Result(DUPLICATE, "", 0)  # the same words printed by a command that succeeded
    assert manage(remote, "loaddata", "data.json") == 0
    remote.attached_answer = Result("", "CommandError: No fixture named 'data' found.\n", 1)
    assert manage(remote, "loaddata", "data.json") == 1
    assert "hint:" not in capsys.readouterr().err
