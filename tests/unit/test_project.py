"""Finding the user's project on this machine and reading its settings as production would."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from tasks import project, release_commands, shell
from tasks.layout import Layout
from tests.startproject import startproject
from tests.unit.shellcheck import assert_shellcheck_clean


@pytest.fixture
def beginner(tmp_path):
    return project.find(startproject(tmp_path / "blog"))


def test_find_reads_the_settings_module_from_manage_py(beginner):
    assert beginner.settings_module == "mysite.settings"
    assert beginner.package == "mysite" and beginner.wsgi_module == "mysite.wsgi"
    assert beginner.production_module == "mysite.settings_production"
    assert beginner.production_file == beginner.directory / "mysite" / "settings_production.py"


def test_find_refuses_a_directory_without_manage_py_or_without_its_settings_line(tmp_path):
    with pytest.raises(project.ProjectError, match="has no manage.py: run this in your Django project"):
        project.find(tmp_path)
    (tmp_path / "manage.py").write_text("print('hello')\n")
    with pytest.raises(project.ProjectError, match="does not set DJANGO_SETTINGS_MODULE the usual way"):
        project.find(tmp_path)


def test_requirements_are_read_with_the_files_they_include(tmp_path):
    (tmp_path / "base.txt").write_text("Django==4.2.11\n")
    (tmp_path / "requirements.txt").write_text("-r base.txt\npsycopg2-binary\n-r requirements.txt\n")
    text = project.read_requirements(tmp_path / "requirements.txt")
    assert "Django==4.2.11" in text and "psycopg2-binary" in text
    assert project.read_requirements(tmp_path / "missing.txt") is None


def test_a_sqlite_database_counts_as_content_only_with_rows_of_the_users_own(beginner):
    db = beginner.directory / "db.sqlite3"
    with sqlite3.connect(db) as connection:
        connection.execute("create table django_migrations (id integer)")
        connection.execute("insert into django_migrations values (1)")
        connection.execute("create table blog_post (id integer)")
    assert beginner.sqlite_with_content() is None
    with sqlite3.connect(db) as connection:
        connection.execute("insert into blog_post values (1)")
    assert beginner.sqlite_with_content() == db


def test_local_facts_read_the_settings_with_the_servers_environment(beginner):
    env = project.server_environment("mysite", ("app.test",), "", beginner.directory)
    local = project.local_facts(beginner, beginner.settings_module, env)
    facts = local.facts
    assert local.django and facts["django"] == local.django
    assert facts["debug"] is True and facts["secret_key"] == "insecure" and facts["allowed_hosts"] == []
    assert facts["database"]["engine"].endswith("sqlite3") and facts["static_root"] == ""
    assert facts["environment"]["DJANGO_ALLOWED_HOSTS"] == "app.test"
    assert facts["environment"]["DJANGO_MEDIA_ROOT"] == Layout("mysite").media
    assert "DJANGO_SECRET_KEY" not in json.dumps(facts["environment"])


def test_local_facts_say_why_settings_cannot_be_imported(beginner):
    (beginner.directory / "mysite" / "settings.py").write_text("import not_installed_anywhere\n")
    local = project.local_facts(beginner, beginner.settings_module, {})
    assert local.facts is None and "not_installed_anywhere" in local.error and local.django


def test_the_packed_check_script_runs_in_the_project_and_words_the_findings(beginner):
    """The script the server runs, with the facts and the wording modules in front of it, here."""
    main = "print('@gangway ' + json.dumps([f.text[:20] for f in readiness.server_findings(readiness_facts)]))"
    script = project.check_script("import json\n" + main)
    assert "'" not in script.split("b64decode('")[1].split("')")[0]  # base64: nothing for a shell to read
    env = {**os.environ, **project.server_environment("mysite", ("app.test",), "", beginner.directory),
           "DJANGO_SETTINGS_MODULE": "mysite.settings"}
    out = subprocess.run([sys.executable, "manage.py", "shell", "--no-startup", "--interface", "python",
                          "--command", script], cwd=beginner.directory, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    texts = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("@gangway "))[9:])
    assert "DEBUG is on in produ" in texts and "the database is SQLi" in texts


def test_the_release_check_command_with_the_packed_script_passes_shellcheck():
    from tasks.deploy import CHECK_SCRIPT
    command = release_commands.release_check(Layout("mysite"), "20260101T000000Z-abcdef0",
                                             project.check_script(CHECK_SCRIPT.read_text()))
    assert_shellcheck_clean(shell.script(("checks", command)))
    assert len(command) < 60_000
