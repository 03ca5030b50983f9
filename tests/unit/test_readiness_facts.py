"""What templates/deploy/readiness_facts.py reads from real settings files: where DEBUG comes from (the variable,
and the value that turns it off, found by running the settings' own expression), the URLs the static files and
uploads are linked at, and which models take uploads. Read here as `fab init` reads them, with the environment
the server gives the app."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.inventory import App
from tasks.project import django as project, readiness
from tests.startproject import startproject

# What every settings file below has besides its own lines: production's secret key, hosts, static root, and
# the apps of startproject's settings.
BASE = '''
import os
from pathlib import Path
BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
ALLOWED_HOSTS = os.environ["DJANGO_ALLOWED_HOSTS"].split(",")
STATIC_ROOT = os.environ["DJANGO_STATIC_ROOT"]
MEDIA_ROOT = os.environ["DJANGO_MEDIA_ROOT"]
ROOT_URLCONF = "mysite.urls"
INSTALLED_APPS = ["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                  "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles"]
'''


@pytest.fixture
def site(tmp_path) -> project.Project:
    return project.find(startproject(tmp_path / "site"))


def read(found: project.Project, settings: str, env: dict[str, str] | None = None, module: str = "") -> dict:
    (found.package_dir / "settings.py").write_text(BASE + settings)
    app = App("mysite", ("app.test",), env=tuple((env or {}).items()))
    local = project.local_facts(found, module or found.settings_module,
                                project.server_environment(app, "", found.directory))
    assert local.facts is not None, local.error
    return local.facts


@pytest.mark.parametrize("settings, debug, off", [
    ('DEBUG = os.environ.get("DJANGO_DEBUG") == "1"\n', False, ["DJANGO_DEBUG", "False"]),
    ('DEBUG = os.environ.get("DJANGO_DEBUG", "True") == "True"\n', True, ["DJANGO_DEBUG", "False"]),
    ('DEBUG = bool(int(os.getenv("DJANGO_DEBUG", "1")))\n', True, ["DJANGO_DEBUG", "0"]),
    ('DEBUG = os.environ.get("DEBUG", "1").lower() in ("1", "true", "yes")\n', True, ["DEBUG", "False"]),
    ('DEBUG = "DJANGO_DEBUG" in os.environ\n', False, ["DJANGO_DEBUG", None]),
    # A variable read into a setting of its own first: the expression is followed back to the environment.
    ('ENVIRONMENT = os.environ.get("DJANGO_ENV", "development")\nDEBUG = ENVIRONMENT == "development"\n', True,
     ["DJANGO_ENV", "production"]),
])
def test_debug_read_from_the_environment_names_the_variable_and_a_value_that_turns_it_off(site, settings, debug,
                                                                                          off):
    facts = read(site, settings)
    assert facts["debug"] is debug
    assert facts["debug_source"] == {"variables": [{"name": off[0], "set": False}], "off": off}


def test_a_variable_the_inventory_sets_is_seen_set_and_its_effect_read(site):
    facts = read(site, 'DEBUG = os.environ.get("DJANGO_DEBUG") == "1"\n', env={"DJANGO_DEBUG": "1"})
    assert facts["debug"] is True
    assert facts["debug_source"] == {"variables": [{"name": "DJANGO_DEBUG", "set": True}],
                                     "off": ["DJANGO_DEBUG", "False"]}
    finding = readiness.settings_findings(facts, drivers=False)[0]
    assert finding.blocking and "which the app's environment sets so that DEBUG is on" in finding.text
    assert "`fab config --set DJANGO_DEBUG=False`" in finding.text


@pytest.mark.parametrize("settings", ["DEBUG = True\n", "DEBUG = False\n", "",
                                      'DEBUG = False\nLOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")\n'])
def test_debug_written_in_the_settings_has_no_environment_source(site, settings):
    assert read(site, settings)["debug_source"] is None


def test_a_production_module_that_star_imports_the_settings_is_followed_to_where_debug_is_set(site):
    (site.package_dir / "settings_production.py").write_text("from .settings import *  # noqa\n")
    facts = read(site, 'DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"\n',
                 module="mysite.settings_production")
    assert facts["debug"] is True and facts["debug_source"]["off"] == ["DJANGO_DEBUG", "False"]
    # The production settings init writes set DEBUG = False: nothing is read from the environment then.
    (site.package_dir / "settings_production.py").write_text("from .settings import *  # noqa\nDEBUG = False\n")
    assert read(site, 'DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"\n',
                module="mysite.settings_production")["debug_source"] is None


def test_reading_the_settings_leaves_the_environment_as_the_server_gave_it(site):
    """The expression is run with the variable changed; afterwards it is back as it was."""
    settings = ('DEBUG = os.environ.get("DJANGO_DEBUG") == "1"\n'
                'AFTER = os.environ.get("DJANGO_DEBUG", "unset")\n')
    facts = read(site, settings, env={"DJANGO_DEBUG": "0"})
    assert facts["debug"] is False and facts["debug_source"]["variables"] == [{"name": "DJANGO_DEBUG", "set": True}]


def test_the_urls_of_static_files_and_uploads_are_read_as_django_links_them(site):
    facts = read(site, 'STATIC_URL = "static/"\nMEDIA_URL = "/uploads/"\n')
    assert facts["static_url"] == "/static/"  # a relative one is put under the script prefix (Django 3.1+)
    assert facts["media_url"] == "/uploads/"


def add_uploads_app(found: project.Project) -> None:
    app = found.directory / "gallery"
    (app / "migrations").mkdir(parents=True)
    (app / "__init__.py").write_text("")
    (app / "migrations" / "__init__.py").write_text("")
    (app / "models.py").write_text("from django.db import models\n\n\nclass Photo(models.Model):\n"
                                   "    title = models.CharField(max_length=20)\n"
                                   "    file = models.FileField(upload_to='photos/')\n")


def test_the_models_that_take_uploads_are_listed(site):
    add_uploads_app(site)
    facts = read(site, 'INSTALLED_APPS += ["gallery"]\nMEDIA_URL = "/uploads/"\n')
    assert facts["uploads"] == ["gallery.Photo.file"]
    finding = [f for f in readiness.settings_findings(facts, drivers=False) if "MEDIA_URL" in f.text]
    assert len(finding) == 1 and finding[0].blocking
    assert "every file your models take (gallery.Photo.file) would answer 404" in finding[0].text
    clean = read(site, 'INSTALLED_APPS += ["gallery"]\nMEDIA_URL = "/media/"\n')
    assert not [f for f in readiness.settings_findings(clean, drivers=False) if "MEDIA_URL" in f.text]


def test_no_model_takes_uploads_in_startprojects_apps(site):
    assert read(site, "")["uploads"] == []


def test_settings_outside_a_package_are_read_too(tmp_path: Path):
    """A settings module at the top level (manage.py next to settings.py) that star-imports another one."""
    directory = startproject(tmp_path / "flat")
    (directory / "manage.py").write_text((directory / "manage.py").read_text().replace("mysite.settings",
                                                                                       "settings"))
    (directory / "base.py").write_text(BASE + 'DEBUG = os.environ.get("DJANGO_DEBUG") == "1"\n')
    (directory / "settings.py").write_text("from base import *  # noqa\n")
    found = project.find(directory)
    local = project.local_facts(found, "settings", project.server_environment(App("flat"), "", directory))
    assert local.facts and local.facts["debug_source"]["off"] == ["DJANGO_DEBUG", "False"]


def release_check(site: project.Project, args: dict | None = None, env: dict[str, str] | None = None):
    """The deploy's release check, run the way the server runs it (Django's shell, the apps loaded, the app's
    environment and `env`), with its arguments `args`."""
    import os
    import subprocess
    import sys

    from tasks.cli.deploy import check_program
    from tasks.commands import programs

    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    environment = {**clean, **project.server_environment(App("mysite", ("app.test",)), "", site.directory),
                   "DJANGO_SETTINGS_MODULE": "mysite.settings", **(env or {})}
    return subprocess.run([sys.executable, "manage.py", "shell", "--no-startup", "--interface", "python",
                           "--command", programs.BOOTSTRAP],
                          input=programs.document("release_check.py", args or {}, check_program()),
                          cwd=site.directory, env=environment, capture_output=True, text=True)


def gates(out) -> list[str]:
    """The gates a release check named, in order."""
    import json

    from tasks.commands import shell
    return [json.loads(line[len(shell.REPORT) + 1:])["gate"] for line in out.stdout.splitlines()
            if line.startswith(shell.REPORT + " ") and "gate" in line[len(shell.REPORT) + 1:]]


def test_the_release_check_stops_at_its_readiness_gate_on_the_server_s_reading_of_the_settings(site):
    """The deploy's release check, run the way the server runs it (Django's shell, the apps loaded, the app's
    environment): a MEDIA_URL nginx does not serve, with a model that takes uploads, and DEBUG on for want of
    DJANGO_DEBUG stop it at the readiness gate, the first, before collectstatic and the migrations."""
    add_uploads_app(site)
    (site.package_dir / "settings.py").write_text(BASE + 'INSTALLED_APPS += ["gallery"]\nMEDIA_URL = "/uploads/"\n'
                                                  'DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"\n')
    out = release_check(site)
    assert out.returncode != 0
    assert gates(out) == ["readiness"]
    assert f"{readiness.NOT_READY}:\n- DEBUG is on in production: your settings read it from the environment " \
           "variable DJANGO_DEBUG, which the server does not set" in out.stderr
    assert "- MEDIA_URL is '/uploads/', but nginx serves uploaded files at /media/: every file your models take " \
           "(gallery.Photo.file) would answer 404" in out.stderr
    assert "`fab config --set DJANGO_DEBUG=False`" in out.stderr
    assert not (site.directory / "static").exists()  # collectstatic never ran


def test_a_sealed_release_started_with_debug_turned_on_is_stopped_at_the_readiness_gate(site):
    """`fab config --set DJANGO_DEBUG=1` starts the live code anew with the new value: the release check runs
    in it sealed (nothing written) and stops at its readiness gate, as a deploy's would. (That a sealed check
    that passes stops after Django's deploy checks, before collectstatic: tests/integration/test_operate.py,
    on a server with PostgreSQL's driver.)"""
    (site.package_dir / "settings.py").write_text(BASE + 'DEBUG = os.environ.get("DJANGO_DEBUG") == "1"\n')
    refused = release_check(site, {"sealed": True}, env={"DJANGO_DEBUG": "1"})
    assert refused.returncode != 0 and gates(refused) == ["readiness"]
    assert f"{readiness.NOT_READY}:\n- DEBUG is on in production: your settings read it from the environment " \
           "variable DJANGO_DEBUG, which the app's environment sets so that DEBUG is on" in refused.stderr
    assert not (site.directory / "static").exists()
