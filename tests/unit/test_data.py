"""`fab import-data` without a server: the local dump made by the project's own Django with its local
settings, the media archive, the server-side scripts (shellcheck, hostile names, no partial files)."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tasks.cli import data
from tasks.commands import programs, release as commands, shell
from tasks.layout import Layout
from tasks.commands.database import Client
from tests.unit.shellcheck import assert_shellcheck_clean
from tests.unit.test_release_commands import HOSTILE, run

REPO = Path(__file__).resolve().parents[2]
LAYOUT = Layout("mysite")
LAPTOP = {"DJANGO_DEBUG": "1"}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """The example app as on a laptop: SQLite with three rows (one hidden from the default manager's view
    would not matter: the dump reads the base manager)."""
    path = tmp_path / "project"
    shutil.copytree(REPO / "example", path, ignore=shutil.ignore_patterns("__pycache__", "db.sqlite3", "media"))
    env = {**os.environ, **LAPTOP}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=path, env=env, check=True,
                   capture_output=True)
    subprocess.run([sys.executable, "manage.py", "shell", "-c", "from counter.models import Hit\n"
                    "for p in ('/a/', '/b/', '/caf\u00e9/'): Hit.objects.create(path=p)"],
                   cwd=path, env=env, check=True, capture_output=True)
    for name, value in LAPTOP.items():
        monkeypatch.setenv(name, value)
    return path


def test_the_local_database_is_dumped_by_the_project_s_django_with_row_counts(project):
    dump = data.dump_locally(project, None)
    assert dump.rows == {"counter.hit": 3}
    assert dump.database == str(project / "db.sqlite3") and dump.media_root == str(project / "media")
    objects = json.loads(gzip.decompress(dump.fixture))
    assert sorted(o["fields"]["path"] for o in objects) == ["/a/", "/b/", "/caf\u00e9/"]
    assert not any(o["model"].startswith(("contenttypes.", "auth.permission", "sessions.")) for o in objects)


def test_another_database_file_can_be_named(project, tmp_path):
    other = tmp_path / "other.sqlite3"
    shutil.copy(project / "db.sqlite3", other)
    subprocess.run([sys.executable, "-c", f"import sqlite3; c = sqlite3.connect({str(other)!r}); "
                    "c.execute('delete from counter_hit where id > 1'); c.commit()"], check=True)
    assert data.dump_locally(project, str(other)).rows == {"counter.hit": 1}


def test_a_missing_database_file_is_named_not_created(project, tmp_path):
    with pytest.raises(data.DumpError, match="no SQLite database at .*missing.sqlite3"):
        data.dump_locally(project, str(tmp_path / "missing.sqlite3"))
    assert not (tmp_path / "missing.sqlite3").exists()


def test_settings_that_fail_to_load_are_reported_in_one_line(project, monkeypatch):
    monkeypatch.delenv("DJANGO_DEBUG")  # the example refuses to start without a secret key then
    with pytest.raises(data.DumpError, match="ImproperlyConfigured: DJANGO_SECRET_KEY is not set"):
        data.dump_locally(project, None)


def test_the_production_settings_module_is_not_used_for_the_local_dump(project, monkeypatch):
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "mysite.settings_production")
    assert data.dump_locally(project, None, settings_module="mysite.settings_production").rows == {"counter.hit": 3}


def test_the_media_archive_holds_regular_files_only(tmp_path):
    media = tmp_path / "media"
    (media / "uploads").mkdir(parents=True)
    (media / "uploads" / "logo.png").write_bytes(b"png")
    (media / "a.txt").write_text("a")
    (media / "link").symlink_to("/etc/passwd")
    archive, count = data.media_archive(media)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert sorted(m.name for m in tar.getmembers()) == ["a.txt", "uploads/logo.png"]
    assert count == 2


def test_row_counts_that_differ_are_named():
    assert data.compare({"blog.post": 3, "auth.user": 1}, {"blog.post": 3, "auth.user": 1}) == []
    assert data.compare({"blog.post": 3, "auth.user": 1}, {"blog.post": 2}) == [
        "auth.user: 1 here, none on the server", "blog.post: 3 here, 2 on the server"]


@pytest.mark.parametrize("script", [
    shell.script(("count", commands.count_rows(LAYOUT, "r1", "mysite", "mysite-manage-1", ["blog.post"]))),
    shell.script(*commands.load_data(LAYOUT, "r1", Client("mysite"), "mysite-manage-1", LAYOUT.upload("a", "d.json.gz"),
                                     True, "20260101T000000Z-before-import")),
    shell.script(("media", commands.unpack_media(LAYOUT, "mysite", LAYOUT.upload("a", "media.tar"), False))),
], ids=["count", "replace and load", "media"])
def test_every_import_script_passes_shellcheck(script):
    assert_shellcheck_clean(script)


# A stand-in for the release's Django: blog.post has 3 rows, blog.comment none, nothing else exists.
FAKE_APPS = """
class _Model:
    def __init__(self, label, rows):
        self._meta = type("Meta", (), {"label_lower": label})()
        self._base_manager = type("Manager", (), {"count": lambda manager: rows})()


MODELS = {"blog.post": _Model("blog.post", 3), "blog.comment": _Model("blog.comment", 0)}


class _Apps:
    def get_model(self, label):
        if label in MODELS:
            return MODELS[label]
        raise LookupError(label)

    def get_models(self):
        return list(MODELS.values())


apps = _Apps()
"""
# systemd-run as the sandbox runs it: the command after "--" (python manage.py shell --command BOOTSTRAP), its
# arguments kept for the test, the program run by a python3 that has the stand-in Django.
RUN_MANAGE_SHELL = 'while [ "$1" != -- ]; do shift; done; shift; printf "%s\\n" "$@" > args; ' \
                   'PYTHONPATH="$PWD/fake" exec python3 -c "$5"'


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_model_name_stays_data(tmp_path, value):
    (tmp_path / "fake" / "django").mkdir(parents=True)
    (tmp_path / "fake" / "django" / "__init__.py").write_text("")
    (tmp_path / "fake" / "django" / "apps.py").write_text(FAKE_APPS)
    script = shell.script(("count", commands.count_rows(LAYOUT, "r1", "mysite", "u", ["blog.post", value])))
    out = run(script, tmp_path, {"systemd-run": RUN_MANAGE_SHELL})
    assert out.returncode == 0 and not (tmp_path / "CANARY").exists(), out.stderr
    assert shell.parse_reports(out.stdout) == {"rows": {"blog.post": 3}, "unknown": [value]}
    # The command line is the same whatever the models: the program and its arguments come on its input.
    assert (tmp_path / "args").read_text().endswith("manage.py\nshell\n--command\n" + programs.BOOTSTRAP + "\n")


def test_every_model_the_code_has_is_counted_when_asked(tmp_path):
    """What a --replace's flush empties: the code's other models too, beside those asked for."""
    (tmp_path / "fake" / "django").mkdir(parents=True)
    (tmp_path / "fake" / "django" / "__init__.py").write_text("")
    (tmp_path / "fake" / "django" / "apps.py").write_text(FAKE_APPS)
    for every, rows in ((False, {"blog.post": 3}), (True, {"blog.comment": 0, "blog.post": 3})):
        script = shell.script(("count", commands.count_rows(LAYOUT, "r1", "mysite", "u", ["blog.post"], every)))
        out = run(script, tmp_path, {"systemd-run": RUN_MANAGE_SHELL})
        assert out.returncode == 0, out.stderr
        assert shell.parse_reports(out.stdout) == {"rows": rows, "unknown": []}


def _unpack(tmp_path: Path, files: dict[str, bytes], existing: dict[str, bytes], replace: bool,
            members: list[tarfile.TarInfo] = (), where: str = "media") -> tuple[subprocess.CompletedProcess, Path]:
    """Unpack a tar of `files` (and `members`) into a media directory that has `existing`; the directory and the
    upload are named after `where`."""
    class Local(Layout):
        @property
        def shared(self) -> str:
            return str(tmp_path / where / "shared")
    layout = Local("mysite")
    media = Path(layout.media)
    media.mkdir(parents=True)
    for name, content in existing.items():
        (media / name).parent.mkdir(parents=True, exist_ok=True)
        (media / name).write_bytes(content)
    upload = tmp_path / f"{where}.tar"
    with tarfile.open(upload, "w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for member in members:
            tar.addfile(member)
    stubs = {"chown": "true", "runuser": 'shift 3; exec "$@"'}  # runuser -u USER -- sh -c ...
    out = run(shell.script(("media", commands.unpack_media(layout, "mysite", str(upload), replace))), tmp_path,
              stubs)
    assert not upload.exists()  # removed, whatever happened
    return out, media


def test_media_files_are_added_and_the_server_s_own_kept_unless_replace(tmp_path):
    out, media = _unpack(tmp_path, {"uploads/new.png": b"new", "same.txt": b"laptop"}, {"same.txt": b"server"},
                         replace=False)
    assert out.returncode == 0, out.stderr
    assert shell.parse_reports(out.stdout)["media"] == {"added": 1, "replaced": 0, "kept": 1}
    assert (media / "uploads" / "new.png").read_bytes() == b"new" and (media / "same.txt").read_bytes() == b"server"
    assert sorted(p.name for p in media.iterdir()) == ["same.txt", "uploads"]  # no staging directory left


def test_with_replace_the_laptop_s_file_wins(tmp_path):
    out, media = _unpack(tmp_path, {"same.txt": b"laptop"}, {"same.txt": b"server", "other": b"kept"}, replace=True)
    assert shell.parse_reports(out.stdout)["media"] == {"added": 0, "replaced": 1, "kept": 0}
    assert (media / "same.txt").read_bytes() == b"laptop" and (media / "other").read_bytes() == b"kept"


def test_a_member_that_climbs_out_is_refused_and_nothing_is_put_in_place(tmp_path):
    out, media = _unpack(tmp_path, {"fine.txt": b"x", "../escape.txt": b"x"}, {}, replace=False)
    assert out.returncode != 0 and shell.parse_reports(out.stdout)["failed"] == "media"
    assert not (tmp_path / "media" / "shared" / "escape.txt").exists() and list(media.iterdir()) == []


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_paths_of_the_media_directory_and_the_upload_stay_data(tmp_path, value):
    out, media = _unpack(tmp_path, {"new.txt": b"new", "same.txt": b"laptop"}, {"same.txt": b"server"},
                         replace=True, where=value)
    assert out.returncode == 0 and not (tmp_path / "CANARY").exists(), out.stderr
    assert shell.parse_reports(out.stdout)["media"] == {"added": 1, "replaced": 1, "kept": 0}
    assert (media / "new.txt").read_bytes() == b"new" and (media / "same.txt").read_bytes() == b"laptop"
