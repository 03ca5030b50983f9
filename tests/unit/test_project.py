"""Finding the user's project on this machine and reading its settings as production would."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from tasks.commands import programs, release as release_commands, shell
from tasks.project import django as project
from tasks.inventory import App
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
    env = project.server_environment(App("mysite", ("app.test",)), "", beginner.directory)
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


def test_the_check_program_runs_in_the_project_from_its_input_and_words_the_findings(beginner):
    """The program the server runs, with the facts and the wording modules in front of it, here: fed to
    Django's shell on its input the way tasks.commands.programs sends it."""
    main = "print('@gangway ' + json.dumps([f.text[:20] for f in readiness.server_findings(readiness_facts)]))"
    program = project.check_program("import json\n" + main)
    env = {**os.environ, **project.server_environment(App("mysite", ("app.test",)), "", beginner.directory),
           "DJANGO_SETTINGS_MODULE": "mysite.settings"}
    out = subprocess.run([sys.executable, "manage.py", "shell", "--no-startup", "--interface", "python",
                          "--command", programs.BOOTSTRAP], input=programs.document("release_check.py", {}, program),
                         cwd=beginner.directory, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    texts = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("@gangway "))[9:])
    assert "DEBUG is on in produ" in texts and "the database is SQLi" in texts


def test_the_release_check_command_passes_shellcheck_and_carries_any_size_as_data():
    from tasks.cli.deploy import CHECK_SCRIPT
    command = release_commands.release_check(Layout("mysite"), "20260101T000000Z-abcdef0",
                                             project.check_program(CHECK_SCRIPT.read_text()))
    assert_shellcheck_clean(shell.script(("checks", command)))
    huge = project.check_program("# " + "x" * 200_000 + "\nprint('@gangway {\"big\": 1}')")
    big = release_commands.release_check(Layout("mysite"), "20260101T000000Z-abcdef0", huge)
    command_line = next(line for line in big.splitlines() if "systemd-run" in line)
    assert len(command_line) < 5_000 and programs.END in command_line  # no argument carries the program:
    assert "x" * 200_000 in big.split(command_line, 1)[1]               # the here-document after it does


def test_the_sealed_settings_check_passes_shellcheck_writes_nothing_and_says_it_is_sealed():
    from tasks.cli.deploy import check_program
    command = release_commands.settings_check(Layout("mysite"), "20260101T000000Z-abcdef0", check_program())
    assert_shellcheck_clean(shell.script(("checks", command)))
    assert "ReadWritePaths" not in command and "chown" not in command
    assert '"args": {"sealed": true}' in command


def test_local_facts_see_only_what_the_server_sets_not_this_shells_variables(beginner, monkeypatch):
    """A laptop's shell (direnv, a sourced .env) may hold DEBUG, DATABASE_URL or DJANGO_DEBUG; the server sets
    none of those, so the settings are read without them."""
    (beginner.directory / "mysite" / "settings.py").write_text(
        "import os\nDEBUG = os.environ.get('DEBUG') == '1' or os.environ.get('DJANGO_DEBUG') == '1'\n"
        "SECRET_KEY = os.environ['DJANGO_SECRET_KEY']\nSTATIC_ROOT = os.environ['DJANGO_STATIC_ROOT']\n"
        "ROOT_URLCONF = 'mysite.urls'\nINSTALLED_APPS = ['django.contrib.admin', 'django.contrib.auth', "
        "'django.contrib.contenttypes', 'django.contrib.sessions', 'django.contrib.messages']\n"
        "LAPTOP = os.environ.get('DATABASE_URL', '') + os.environ.get('GANGWAY_RELEASE', '?')\n")
    for name, value in {"DEBUG": "1", "DJANGO_DEBUG": "1", "DATABASE_URL": "sqlite:///db.sqlite3"}.items():
        monkeypatch.setenv(name, value)
    env = project.server_environment(App("mysite", ("app.test",)), "", beginner.directory)
    assert env["DATABASE_URL"] == "postgres:///mysite" and env["DJANGO_STATIC_ROOT"] == f"{beginner.directory}/static"
    assert "DJANGO_DEBUG" not in env and "DEBUG" not in env
    facts = project.local_facts(beginner, beginner.settings_module, env).facts
    assert facts["debug"] is False and facts["secret_key"] == "environment"
    assert facts["static_root"] == str((beginner.directory / "static").resolve())
    assert not list(beginner.directory.rglob("__pycache__"))  # nothing left behind in the project


def test_the_environment_init_reads_with_is_the_one_a_deploy_writes():
    from tasks.cli.deploy import Session, _managed_environment
    from tasks.inventory import parse

    inv = parse({"app": {"name": "m", "domains": ["a.example"], "settings_module": "mysite.production",
                         "env": {"SENTRY_ENVIRONMENT": "production"}},
                 "hosts": [{"address": "192.0.2.9"}]}, "x", project.Path("."))
    deployed = _managed_environment(Session(inv, inv.hosts[0], remote=None, reporter=None))
    local = project.server_environment(inv.app, "192.0.2.9", project.Path("/p"))
    assert {k: v for k, v in local.items() if k in deployed} == deployed
    assert set(local) - set(deployed) == {"DJANGO_SECRET_KEY", "DJANGO_STATIC_ROOT", "GANGWAY_RELEASE"}


def test_the_facts_say_whether_slash_has_a_page_and_else_the_first_page_without_parameters(beginner):
    """django.urls.resolve, no request: the admin is passed over (it redirects to its login), and so are
    patterns with parameters; the database driver the settings name need not be installed here."""
    directory = beginner.directory
    (directory / "polls").mkdir()
    (directory / "polls" / "__init__.py").write_text("")
    (directory / "polls" / "urls.py").write_text(
        "from django.http import HttpResponse\nfrom django.urls import path, re_path\n"
        "def view(request, **kwargs):\n    return HttpResponse('ok')\n"
        "urlpatterns = [path('<int:pk>/', view), re_path(r'^(?P<year>[0-9]{4})/$', view), "
        "re_path(r'^a.*b/$', view), path('', view)]\n")
    urls = directory / "mysite" / "urls.py"
    urls.write_text(urls.read_text().replace("from django.urls import path", "from django.urls import include, path")
                    .replace("path('admin/', admin.site.urls),",
                             "path('admin/', admin.site.urls),\n    path('polls/', include('polls.urls')),"))
    env = project.server_environment(App("mysite"), "192.0.2.9", directory)
    settings = directory / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\nDATABASES = {'default': {'ENGINE': "
                        "'django.db.backends.postgresql', 'NAME': 'mysite'}}\n")
    assert project.local_facts(beginner, beginner.settings_module, env).facts["health"] == {
        "root": False, "path": "/polls/", "redirect": ""}

    urls.write_text(urls.read_text().replace("path('polls/', include('polls.urls')),",
                                             "path('polls/', include('polls.urls')), path('', admin.site.urls),"))
    assert project.local_facts(beginner, beginner.settings_module, env).facts["health"]["root"] is False
    urls.write_text(urls.read_text().replace("path('', admin.site.urls),", "path('', include('polls.urls')),"))
    assert project.local_facts(beginner, beginner.settings_module, env).facts["health"] == {"root": True, "path": "/", "redirect": ""}


def test_the_facts_say_nothing_of_the_health_path_when_the_urls_cannot_be_read(beginner):
    (beginner.directory / "mysite" / "urls.py").write_text("import not_installed_anywhere\n")
    facts = project.local_facts(beginner, beginner.settings_module, {}).facts
    assert facts is not None and facts["health"] is None
