"""The programs gangway runs inside a release, run here against a tiny Django project (SQLite, the system's
Django): templates/deploy/known_migrations.py (which migrations a release knows, squashed ones included) and
templates/deploy/reverse_migrations.py (reversing with Django's own executor, and saying what failed)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.commands import programs, release as release_commands
from tasks.facts import releases
from tasks.cli.deploy import KNOWN_MIGRATIONS_SCRIPT

pytest.importorskip("django")

NOTES_0001 = '''from django.db import migrations, models
class Migration(migrations.Migration):
    initial = True
    operations = [migrations.CreateModel("Note", [("id", models.AutoField(primary_key=True)),
                                                   ("text", models.TextField(default=""))])]
'''
NOTES_0002 = '''from django.db import migrations, models
class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]
    operations = [migrations.AddField("note", "tag", models.CharField(max_length=20, default=""))]
'''
NOTES_SQUASHED = '''from django.db import migrations, models
class Migration(migrations.Migration):
    initial = True
    replaces = [("notes", "0001_initial"), ("notes", "0002_tag")]
    operations = [migrations.CreateModel("Note", [("id", models.AutoField(primary_key=True)),
                                                   ("text", models.TextField(default="")),
                                                   ("tag", models.CharField(max_length=20, default=""))])]
'''
NOTES_0003 = '''from django.db import migrations, models
class Migration(migrations.Migration):
    dependencies = [("notes", "0002_tag")]
    operations = [migrations.AddField("note", "more", models.IntegerField(default=0))]
'''
EXTRAS_0001 = '''from django.db import migrations, models
class Migration(migrations.Migration):
    initial = True
    dependencies = [("notes", "0002_tag")]
    operations = [migrations.CreateModel("Pin", [("id", models.AutoField(primary_key=True)),
                  ("note", models.ForeignKey("notes.note", on_delete=models.CASCADE))])]
'''
BROKEN_REVERSE = '''from django.db import migrations
def forwards(apps, schema_editor):
    pass
def backwards(apps, schema_editor):
    raise ValueError("cannot go back on purpose")
class Migration(migrations.Migration):
    dependencies = [("notes", "0003_more")]
    operations = [migrations.RunPython(forwards, backwards)]
'''
MODELS = {"notes": "from django.db import models\n\nclass Note(models.Model):\n"
                   "    text = models.TextField(default='')\n    tag = models.CharField(max_length=20, default='')\n    more = models.IntegerField(default=0)\n",
          "extras": "from django.db import models\n\nclass Pin(models.Model):\n"
                    "    note = models.ForeignKey('notes.Note', on_delete=models.CASCADE)\n"}


@pytest.fixture
def project(tmp_path) -> Path:
    """notes: 0001, 0002, a squash of both, 0003; extras: 0001, which depends on notes.0002."""
    (tmp_path / "site_settings.py").write_text(
        "SECRET_KEY = 'x'\nINSTALLED_APPS = ['notes', 'extras']\nUSE_TZ = True\n"
        "DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': 'db.sqlite3'}}\n"
        "DEFAULT_AUTO_FIELD = 'django.db.models.AutoField'\n")
    (tmp_path / "manage.py").write_text("import sys\nfrom django.core.management import execute_from_command_line\n"
                                        "execute_from_command_line(sys.argv)\n")
    files = {"notes/migrations/0001_initial.py": NOTES_0001, "notes/migrations/0002_tag.py": NOTES_0002,
             "notes/migrations/0001_squashed_0002_tag.py": NOTES_SQUASHED,
             "notes/migrations/0003_more.py": NOTES_0003, "extras/migrations/0001_initial.py": EXTRAS_0001}
    for app in ("notes", "extras"):
        (tmp_path / app / "migrations").mkdir(parents=True)
        (tmp_path / app / "__init__.py").write_text("")
        (tmp_path / app / "migrations" / "__init__.py").write_text("")
        (tmp_path / app / "models.py").write_text(MODELS[app])
    for path, text in files.items():
        (tmp_path / path).write_text(text)
    return tmp_path


def manage(project: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "site_settings", "PYTHONPATH": str(project)}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=project, env=env, capture_output=True, text=True,
                          input=stdin)


def program(project: Path, code: str, stdin: str | None = None) -> tuple[int, dict, str]:
    out = manage(project, "shell", "--no-startup", "--interface", "python", "--command", code, stdin=stdin)
    reports: dict = {}
    for line in out.stdout.splitlines():
        if line.startswith("@gangway "):
            value = json.loads(line[9:])
            for key, item in value.items():
                reports.setdefault(key, []).append(item) if key == "unapplied" else reports.__setitem__(key, item)
    return out.returncode, reports, out.stderr


def applied(project: Path) -> list[str]:
    with sqlite3.connect(project / "db.sqlite3") as db:
        return [f"{a}.{n}" for a, n in db.execute("select app, name from django_migrations order by id")]


def columns(project: Path, table: str) -> set[str]:
    with sqlite3.connect(project / "db.sqlite3") as db:
        return {row[1] for row in db.execute(f"pragma table_info({table})")}


def known(project: Path) -> releases.Release:
    code = (KNOWN_MIGRATIONS_SCRIPT.read_text() + "\nimport json\nfrom django.db.migrations.loader import "
            "MigrationLoader\nprint('@gangway ' + json.dumps(known_migrations(MigrationLoader(None, "
            "ignore_no_migrations=True))))\n")
    rc, report, err = program(project, code)
    assert rc == 0, err
    return releases.Release("r", migrations=report["migrations"], replaces=report["replaces"])


def reverse(project: Path, remove: list[str]) -> tuple[int, dict, str]:
    # As tasks/commands/release.py `reverse_migrations` runs it: the bootstrap line, the program and its
    # arguments as the JSON document on its input.
    return program(project, programs.BOOTSTRAP, programs.document(
        "reverse_migrations.py", {"remove": remove}, release_commands.REVERSE_SCRIPT.read_text()))


def test_a_release_knows_the_names_its_squashed_migrations_replace_as_django_records_them(project):
    release = known(project)
    assert release.replaces == {"notes.0001_squashed_0002_tag": ["notes.0001_initial", "notes.0002_tag"]}
    order = release.migrations
    assert order.index("notes.0001_initial") < order.index("notes.0002_tag") < order.index(
        "notes.0001_squashed_0002_tag") < order.index("notes.0003_more")
    assert manage(project, "migrate", "--noinput").returncode == 0
    table = applied(project)
    assert {"notes.0001_initial", "notes.0002_tag", "notes.0001_squashed_0002_tag"} <= set(table)
    # The comparisons agree with Django: nothing ahead, nothing missing.
    assert releases.migrations_to_reverse(table, release) == []
    assert releases.migrations_missing(table, release) == []
    plan = manage(project, "migrate", "--plan")
    assert "No planned migration operations" in plan.stdout


def test_reversing_follows_django_s_plan_across_apps_and_through_a_squash(project):
    assert manage(project, "migrate", "--noinput").returncode == 0
    rc, report, err = reverse(project, ["notes.0003_more"])
    assert rc == 0, err
    assert report["unapplied"] == ["notes.0003_more"] and "notes.0003_more" not in applied(project)
    assert "more" not in columns(project, "notes_note")
    everything = [m for m in applied(project)]
    rc, report, err = reverse(project, everything)
    assert rc == 0, err
    # The dependent app first, then the squashed migration (which takes its replaced names along).
    assert report["unapplied"] == ["extras.0001_initial", "notes.0001_squashed_0002_tag"]
    assert applied(project) == [] and columns(project, "notes_note") == set()


def test_a_plan_that_would_reverse_more_than_asked_changes_nothing(project):
    assert manage(project, "migrate", "--noinput").returncode == 0
    before = applied(project)
    rc, report, _ = reverse(project, ["notes.0001_initial", "notes.0002_tag", "notes.0001_squashed_0002_tag",
                                      "notes.0003_more"])
    assert rc == 3 and report["reverse_extra"] == ["extras.0001_initial"]
    assert applied(project) == before


def test_migrations_the_code_does_not_have_are_refused_by_name(project):
    assert manage(project, "migrate", "--noinput").returncode == 0
    rc, report, _ = reverse(project, ["notes.0099_elsewhere"])
    assert rc == 3 and report["reverse_unknown"] == ["notes.0099_elsewhere"]


def test_a_migration_that_cannot_be_reversed_is_named_with_django_s_reason(project):
    (project / "notes/migrations/0004_broken.py").write_text(BROKEN_REVERSE)
    assert manage(project, "migrate", "--noinput").returncode == 0
    rc, report, err = reverse(project, ["notes.0003_more", "notes.0004_broken"])
    assert rc == 1
    assert report["reverse_failed"] == "notes.0004_broken"
    assert report["why"] == "ValueError: cannot go back on purpose"
    assert "notes.0004_broken" in applied(project)
