"""`fab init` on a copy of a beginner's project (startproject defaults: DEBUG on, a key in the code, SQLite,
no requirements file): what it writes, what it only shows, and what it refuses."""

from __future__ import annotations

import json
import re
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.cli import init
from tasks import inventory
from tests.startproject import startproject

REPO = Path(__file__).resolve().parents[2]
FLAGS = init.Answers(host="192.0.2.10", domains=("blog.test", "www.blog.test"), email="me@blog.test")
WRITTEN = ["deploy/production.yaml", "fabfile.py", "mysite/settings_production.py", "requirements.txt"]
SETTINGS_DUMP = ("from django.conf import settings as s; import json; print(json.dumps({'debug': s.DEBUG, "
                 "'db': s.DATABASES['default'], 'static': str(s.STATIC_ROOT), 'media': str(s.MEDIA_ROOT), "
                 "'proxy': s.SECURE_PROXY_SSL_HEADER, 'origins': s.CSRF_TRUSTED_ORIGINS, "
                 "'hosts': s.ALLOWED_HOSTS, 'cookie': s.SESSION_COOKIE_SECURE}, default=str))")


@pytest.fixture
def blog(tmp_path) -> Path:
    return startproject(tmp_path / "blog")


def run_init(directory: Path, answers: init.Answers = FLAGS, yes: bool = True) -> tuple[init.Outcome, str]:
    lines: list[str] = []
    outcome = init.run(directory, answers, yes, init.Console(say=lines.append, ask=None))
    return outcome, "\n".join(lines)


def files(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): p.read_text() for p in sorted(directory.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def settings_of(directory: Path, env: dict[str, str]) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_") and k != "DATABASE_URL"}
    out = subprocess.run([sys.executable, "-c", SETTINGS_DUMP], cwd=directory, env={**clean, **env},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_init_with_yes_writes_the_fabfile_the_inventory_and_the_fixes(blog):
    settings_before = (blog / "mysite" / "settings.py").read_text()
    outcome, out = run_init(blog)
    assert outcome.written == WRITTEN and outcome.blocking == []
    assert (blog / "fabfile.py").read_text() == ("from gangway.collection import namespace_for\n"
                                                 "namespace = namespace_for(__file__)\n")
    loaded = inventory.load(str(blog / "deploy" / "production.yaml"))
    assert loaded.app.name == "mysite" and loaded.app.domains == ("blog.test", "www.blog.test")
    assert loaded.app.source == blog and loaded.app.settings_module == "mysite.settings_production"
    assert loaded.hosts[0].address == "192.0.2.10" and loaded.acme.email == "me@blog.test"
    requirements = (blog / "requirements.txt").read_text()
    assert "Django>=" in requirements and "psycopg[binary]" in requirements and "gunicorn" in requirements
    assert (blog / "mysite" / "settings.py").read_text() == settings_before, "the user's settings stay as they are"
    assert "is ready for production as far as can be seen from here" in out
    assert "fab provision" in out and "fab deploy" in out and "fab import-data    (" not in out
    assert "  debug " not in out  # startproject writes DEBUG = True: no variable to name


def test_the_production_settings_take_what_production_needs_from_the_environment(blog):
    run_init(blog)
    production = settings_of(blog, {
        "DJANGO_SETTINGS_MODULE": "mysite.settings_production", "DJANGO_SECRET_KEY": "k" * 50,
        "DJANGO_ALLOWED_HOSTS": "blog.test,www.blog.test", "DATABASE_URL": "postgres://u:p%40ss@db.test:5433/blog",
        "DJANGO_STATIC_ROOT": "/srv/blog/releases/r/static", "DJANGO_MEDIA_ROOT": "/srv/blog/shared/media",
        "DJANGO_HTTPS": "1"})
    assert production["debug"] is False and production["hosts"] == ["blog.test", "www.blog.test"]
    db = production["db"]
    assert (db["ENGINE"], db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "django.db.backends.postgresql", "blog", "u", "p@ss", "db.test", "5433")
    assert production["static"] == "/srv/blog/releases/r/static" and production["media"] == "/srv/blog/shared/media"
    assert production["proxy"] == ["HTTP_X_FORWARDED_PROTO", "https"] and production["cookie"] is True
    assert production["origins"] == ["https://blog.test", "https://www.blog.test"]
    socket = settings_of(blog, {"DJANGO_SETTINGS_MODULE": "mysite.settings_production", "DJANGO_SECRET_KEY": "k",
                                "DJANGO_ALLOWED_HOSTS": "", "DATABASE_URL": "postgres:///blog",
                                "DJANGO_STATIC_ROOT": "/s", "DJANGO_MEDIA_ROOT": "/m", "DJANGO_HTTPS": "0"})
    assert (socket["db"]["NAME"], socket["db"]["HOST"], socket["db"]["USER"]) == ("blog", "", "")
    assert socket["proxy"] is None and socket["cookie"] is False
    # On the laptop, without that environment, runserver's settings are the user's own, unchanged.
    laptop = settings_of(blog, {"DJANGO_SETTINGS_MODULE": "mysite.settings"})
    assert laptop["debug"] is True and laptop["db"]["ENGINE"] == "django.db.backends.sqlite3"
    check = subprocess.run([sys.executable, "manage.py", "check"], cwd=blog, capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")})
    assert check.returncode == 0, check.stderr


def test_running_init_again_changes_nothing_and_says_so(blog):
    run_init(blog)
    before = files(blog)
    outcome, out = run_init(blog)
    assert files(blog) == before and outcome.written == [] and outcome.blocking == []
    assert "nothing to change" in out and "kept      deploy/production.yaml" in out


def test_without_yes_and_without_a_terminal_the_fixes_are_only_shown(blog):
    outcome, out = run_init(blog, yes=False)
    assert outcome.written == ["deploy/production.yaml", "fabfile.py"]
    assert not (blog / "requirements.txt").exists() and not (blog / "mysite" / "settings_production.py").exists()
    assert "settings_module" not in yaml.safe_load((blog / "deploy" / "production.yaml").read_text())["app"]
    assert "+++ b/mysite/settings_production.py" in out and "+DEBUG = False" in out
    assert "-  # settings_module: mysite.settings_production\n+  settings_module: mysite.settings_production" in out
    assert "+++ b/requirements.txt" in out and "run again with --yes" in out
    assert "DEBUG is on in production" in out and "there is no requirements.txt" in out
    assert len(outcome.blocking) >= 4


def test_a_local_sqlite_database_with_content_adds_import_data_to_the_next_steps(blog):
    import sqlite3
    with sqlite3.connect(blog / "db.sqlite3") as db:
        db.execute("create table blog_post (title text)")
        db.execute("insert into blog_post values ('hello')")
    _, out = run_init(blog)
    assert "fab import-data    (copies the content of db.sqlite3" in out


@pytest.mark.parametrize("answers, flag", [
    (init.Answers(domains=("$(touch x)",)), "--domain '$(touch x)' is not a valid domain name"),
    (init.Answers(host="1.2.3.4; touch x"), "--host '1.2.3.4; touch x' is neither an IP address"),
    (init.Answers(email="a@b.test\nhosts: []"), "--email"),
    (init.Answers(name="My Site"), "--name 'My Site' is not a usable app name"),
    (init.Answers(user="$(id)"), "--user '$(id)' is not a valid Unix user name"),
])
def test_hostile_flag_values_are_refused_before_anything_is_written(blog, answers, flag):
    before = files(blog)
    with pytest.raises(init.InitError) as error:
        run_init(blog, answers)
    assert str(error.value).startswith(flag)
    assert files(blog) == before and not (blog / "x").exists()


def test_init_outside_a_project_says_where_to_run_it(tmp_path):
    with pytest.raises(Exception, match="has no manage.py: run this in your Django project's directory"):
        run_init(tmp_path)


def test_the_command_line_without_a_terminal_exits_non_zero_while_problems_remain(blog):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "tasks", "init", "--domain", "blog.test", "--host", "192.0.2.10"]
    shown = subprocess.run(command, cwd=blog, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert shown.returncode == 1 and "run again with --yes" in shown.stdout
    assert "problem(s) above would stop a deploy" in shown.stderr and "Traceback" not in shown.stderr
    fixed = subprocess.run(command + ["--yes"], cwd=blog, env=env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    hostile = subprocess.run(command + ["--domain", "$(touch x)"], cwd=blog, env=env, capture_output=True,
                             text=True, stdin=subprocess.DEVNULL)
    assert hostile.returncode == 1 and "init failed: --domain '$(touch x)'" in hostile.stderr
    assert not (blog / "x").exists()


def test_on_a_terminal_init_asks_only_what_it_cannot_find_and_writes_on_yes(blog):
    (blog / "media").mkdir()
    (blog / "media" / "logo.png").write_bytes(b"png")
    answers = iter(["not an address!", "203.0.113.7", "blog.test, www.blog.test", "me@blog.test", "y"])
    questions, lines = [], []

    def ask(question: str) -> str:
        questions.append(question)
        return next(answers)

    outcome = init.run(blog, init.Answers(), False, init.Console(say=lines.append, ask=ask))
    assert len(questions) == 5 and questions[-1] == "Write these changes? [y/N] "
    assert any("'not an address!' is neither an IP address nor a host name" in line for line in lines)
    loaded = inventory.load(str(blog / "deploy" / "production.yaml"))
    assert loaded.hosts[0].address == "203.0.113.7" and loaded.app.domains == ("blog.test", "www.blog.test")
    assert outcome.written == WRITTEN and outcome.blocking == []
    assert "offers to upload the 1 file(s) in media/" in "\n".join(lines)


def test_a_project_that_names_its_own_settings_module_keeps_it_and_gets_the_findings(blog):
    run_init(blog, yes=False)
    path = blog / "deploy" / "production.yaml"
    path.write_text(path.read_text().replace("# settings_module: mysite.settings_production",
                                             "settings_module: mysite.settings"))
    outcome, out = run_init(blog, yes=True)
    assert "mysite/settings_production.py" not in outcome.written and "DEBUG is on in production" in out


def test_settings_that_cannot_be_imported_here_are_named_and_the_requirements_still_checked(blog):
    (blog / "mysite" / "settings.py").write_text("import a_package_not_installed_here\n")
    (blog / "requirements.txt").write_text("Django==1.11.29\n")
    outcome, out = run_init(blog)
    assert ("mysite.settings could not be imported here (ModuleNotFoundError: No module named "
            "'a_package_not_installed_here'), so only the requirements were checked") in out
    assert "mysite/settings_production.py" not in outcome.written
    # init has not seen the server: what it says holds for either Debian release gangway sets up.
    assert "Django 1.11.29 runs neither on Debian 12 (Python 3.11) nor on Debian 13 (Python 3.13)" in out
    assert "the server's Python" not in out
    assert outcome.blocking == ["requirements.txt names no PostgreSQL driver: Django cannot reach the server's "
                                "PostgreSQL without one, so add psycopg2-binary>=2.8,<2.10"]


def test_a_key_path_with_quotes_and_yaml_syntax_is_written_as_a_plain_string(blog, tmp_path):
    key = tmp_path / "my key: \"#1\" 'x'"
    key.write_text("not really a key\n")
    run_init(blog, init.Answers(host="192.0.2.10", key=str(key)))
    assert inventory.load(str(blog / "deploy" / "production.yaml")).hosts[0].key == key


# A team's settings: everything that differs between a laptop and the server read from the environment, with
# the laptop's values as fallbacks (DEBUG only when asked for, SQLite, localhost), the database from
# DATABASE_URL (parsed here with urllib, as dj-database-url does).
TEAM_SETTINGS = '''
import os
import secrets
from urllib.parse import urlsplit

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-only-for-development")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")
CSRF_TRUSTED_ORIGINS = [f"https://{host}" for host in ALLOWED_HOSTS]
_url = urlsplit(os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"))
DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": _url.path[1:]} if _url.scheme ==
             "postgres" else {"ENGINE": "django.db.backends.sqlite3", "NAME": _url.path}}
STATIC_ROOT = os.environ.get("DJANGO_STATIC_ROOT", BASE_DIR / "staticfiles")
MEDIA_ROOT = os.environ.get("DJANGO_MEDIA_ROOT", BASE_DIR / "media")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = os.environ.get("DJANGO_HTTPS") == "1"
'''


@pytest.fixture
def team(tmp_path) -> Path:
    """startproject's mysite, kept as the app `team`, its settings reading the environment, with requirements."""
    directory = startproject(tmp_path / "team")
    settings = directory / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + TEAM_SETTINGS)
    (directory / "requirements.txt").write_text("Django>=5.2,<5.3\npsycopg[binary]>=3.1,<4\ngunicorn>=22\n")
    return directory


def test_a_team_project_is_judged_under_the_servers_environment_not_this_shells(team):
    """No terminal, no --yes, and this shell set up for the laptop (DEBUG on, a local database): the server
    sets none of that, so nothing blocks, and only the fabfile and the inventory are written."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DJANGO_DEBUG": "1", "DEBUG": "1",
           "DATABASE_URL": f"sqlite:///{team / 'db.sqlite3'}", "DJANGO_ALLOWED_HOSTS": "localhost"}
    command = [sys.executable, "-m", "tasks", "init", "--domain", "team.test", "--host", "192.0.2.10",
               "--name", "team"]
    done = subprocess.run(command, cwd=team, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is ready for production as far as can be seen from here" in done.stdout, done.stdout
    assert "Fixes" not in done.stdout and "DEBUG is on" not in done.stdout
    # DEBUG is off there only because DJANGO_DEBUG is unset: init names it, and how the server's is set.
    assert ("  debug     your settings read DEBUG from the environment variable DJANGO_DEBUG, which the server "
            "does not set, so DEBUG is off there; the app's variables on the server are set with `fab config "
            "--set NAME=value`: pin it off with `fab config --set DJANGO_DEBUG=False`") in done.stdout
    assert sorted(p for p in files(team) if p not in ("manage.py", "requirements.txt")
                  and not p.startswith("mysite/")) == ["deploy/production.yaml", "fabfile.py"]
    app = yaml.safe_load((team / "deploy" / "production.yaml").read_text())["app"]
    assert "settings_module" not in app and app["wsgi_module"] == "mysite.wsgi"
    assert not list(team.rglob("__pycache__"))



def test_a_celery_project_gets_redis_and_its_settings_read_with_the_urls_the_server_gives(team):
    """Settings that read os.environ["CELERY_BROKER_URL"] cannot be imported without it: init asks for Redis
    (services: [redis], which gives that variable on the server) and reads the settings with its URLs."""
    team_settings(team, '\nCELERY_BROKER_URL = os.environ["CELERY_BROKER_URL"]\nCACHE_URL = os.environ["REDIS_URL"]\n')
    (team / "requirements.txt").write_text((team / "requirements.txt").read_text() + "celery[redis]>=5.5,<6\n")
    outcome, out = run_init(team, TEAM)
    assert "could not be imported here" not in out, out
    assert ("  redis     your requirements name celery: `services: [redis]` in deploy/production.yaml makes "
            "provision set up a Redis server on the server, and the app reads its address in REDIS_URL and "
            "Celery's queue in CELERY_BROKER_URL") in out
    assert inventory.load(str(team / "deploy" / "production.yaml")).services == ("redis",)
    # Run again with that inventory: still read with the URLs, and nothing else to say.
    outcome, out = run_init(team, TEAM)
    assert "could not be imported here" not in out and "  redis     " in out, out


def test_requirements_that_need_redis_are_named_and_others_are_not():
    from tasks.project.compat import redis_clients
    assert redis_clients("Django>=5\ncelery[redis]>=5.5\ndjango-redis==5.4\nredis\nCelery\n") == [
        "celery", "django-redis", "redis"]
    assert redis_clients("redisearch-py\ncelery-progress\n# celery\ndjango-rq\n") == ["django-rq"]


def team_settings(directory: Path, extra: str) -> None:
    settings = directory / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + extra)


TEAM = init.Answers(host="192.0.2.10", domains=("team.test",), name="team")


def test_debug_on_unless_a_variable_is_set_names_the_variable_and_the_fab_config_command(team):
    team_settings(team, 'DEBUG = os.environ.get("DJANGO_DEBUG", "True") == "True"\n')
    outcome, out = run_init(team, TEAM, yes=False)
    assert outcome.blocking == [
        "DEBUG is on in production: your settings read it from the environment variable DJANGO_DEBUG, which the "
        "server does not set, and without it DEBUG is on, so error pages would show your code, settings and data "
        "to any visitor; turn it off with `fab config --set DJANGO_DEBUG=False` (the app's variables on the "
        "server are set with `fab config --set NAME=value`), or set DEBUG = False for production (`fab init` "
        "writes a production settings module that does this)"]
    assert "  debug " not in out
    # The production settings init writes set DEBUG = False: written, nothing is left to say.
    outcome, out = run_init(team, TEAM, yes=True)
    assert outcome.blocking == [] and "DEBUG" not in out.split("  read ")[1]


def add_gallery(directory: Path) -> None:
    """An app whose model takes uploads, installed in the settings."""
    app = directory / "gallery"
    (app / "migrations").mkdir(parents=True)
    (app / "__init__.py").write_text("")
    (app / "migrations" / "__init__.py").write_text("")
    (app / "models.py").write_text("from django.db import models\n\n\nclass Photo(models.Model):\n"
                                   "    image = models.FileField(upload_to='photos/')\n")
    team_settings(directory, 'INSTALLED_APPS += ["gallery"]\n')


def test_a_media_url_nginx_does_not_serve_stops_init_and_the_production_settings_fix_it(team):
    add_gallery(team)
    team_settings(team, 'MEDIA_URL = "/uploads/"\n')
    outcome, out = run_init(team, TEAM, yes=False)
    assert outcome.blocking == [
        "MEDIA_URL is '/uploads/', but nginx serves uploaded files at /media/: every file your models take "
        "(gallery.Photo.image) would answer 404, so set MEDIA_URL = '/media/' for production (`fab init` writes "
        "a production settings module that does this)"]
    outcome, out = run_init(team, TEAM, yes=True)
    assert "mysite/settings_production.py" in outcome.written and outcome.blocking == []
    assert "MEDIA_URL" not in out.split("  read ")[1]


def test_the_media_url_nginx_serves_is_clean(team):
    add_gallery(team)
    team_settings(team, 'MEDIA_URL = "/media/"\n')
    outcome, out = run_init(team, TEAM, yes=False)
    assert outcome.blocking == [] and "MEDIA_URL" not in out
    assert "is ready for production as far as can be seen from here" in out


@pytest.mark.parametrize("static_url, blocking", [("/assets/", True), ("static/", False), ("/static/", False)])
def test_a_static_url_nginx_does_not_serve_stops_init(team, static_url, blocking):
    team_settings(team, f"STATIC_URL = {static_url!r}\n")
    outcome, out = run_init(team, TEAM, yes=False)
    expected = ["STATIC_URL is '/assets/', but nginx serves the static files at /static/: every page's CSS, JS "
                "and images would answer 404, so set STATIC_URL = '/static/' for production (`fab init` writes a "
                "production settings module that does this)"]
    assert outcome.blocking == (expected if blocking else [])

def test_the_wsgi_module_is_written_when_it_is_not_the_apps_name_and_the_setting_wins(blog):
    outcome, out = run_init(blog)  # the app is named after the settings package: the default fits
    assert "wsgi_module" not in yaml.safe_load((blog / "deploy" / "production.yaml").read_text())["app"]
    assert "WSGI mysite.wsgi" in out

    (blog / "deploy" / "production.yaml").unlink()
    run_init(blog, init.Answers(host="192.0.2.10", name="team"))  # `team` would load team.wsgi: no such module
    assert inventory.load(str(blog / "deploy" / "production.yaml")).app.wsgi == "mysite.wsgi"

    (blog / "deploy" / "production.yaml").unlink()
    settings = blog / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\nWSGI_APPLICATION = 'mysite.serving.application'\n")
    _, out = run_init(blog)
    assert inventory.load(str(blog / "deploy" / "production.yaml")).app.wsgi == "mysite.serving"
    assert "WSGI mysite.serving" in out


def add_polls(directory: Path) -> None:
    """The polls tutorial's URLs: the admin, and the polls under /polls/; nothing at /."""
    (directory / "polls").mkdir()
    (directory / "polls" / "__init__.py").write_text("")
    (directory / "polls" / "urls.py").write_text(
        "from django.http import HttpResponse\nfrom django.urls import path\n"
        "def view(request, **kwargs):\n    return HttpResponse('ok')\n"
        "urlpatterns = [path('', view), path('<int:question_id>/', view)]\n")
    urls = directory / "mysite" / "urls.py"
    urls.write_text("from django.contrib import admin\nfrom django.urls import include, path\n"
                    "urlpatterns = [path('admin/', admin.site.urls), path('polls/', include('polls.urls'))]\n")


def test_without_a_page_at_slash_the_health_check_asks_for_the_first_page_there_is(blog):
    add_polls(blog)
    _, out = run_init(blog)
    text = (blog / "deploy" / "production.yaml").read_text()
    assert inventory.load(str(blog / "deploy" / "production.yaml")).app.health_check == "/polls/"
    assert "# Your URLs have no page at / (Django resolves none there), so / would answer 404" in text
    assert "your URLs have no page at /, so the health check (app.health_check) asks for /polls/" in out

    # An inventory of its own that checks /: kept, and told what to set.
    path = blog / "deploy" / "production.yaml"
    path.write_text(text.replace("health_check: /polls/", "health_check: /"))
    _, out = run_init(blog)
    assert "health_check: /\n" in path.read_text()
    assert "a health check of / would answer 404 and no release would get traffic: set app.health_check in " \
           "deploy/production.yaml to /polls/" in out


def test_with_a_page_at_slash_or_no_page_at_all_the_health_check_stays_at_slash(blog):
    _, out = run_init(blog)  # startproject's URLs: the admin alone, which redirects to its login
    assert inventory.load(str(blog / "deploy" / "production.yaml")).app.health_check == "/"
    assert "set app.health_check in deploy/production.yaml to a path that answers 200 without a login" in out

    (blog / "deploy" / "production.yaml").unlink()
    add_polls(blog)
    urls = blog / "mysite" / "urls.py"
    urls.write_text(urls.read_text().replace("path('polls/'", "path(''"))
    _, out = run_init(blog)
    assert inventory.load(str(blog / "deploy" / "production.yaml")).app.health_check == "/"
    assert "no page at /" not in out and "no page at /" not in (blog / "deploy" / "production.yaml").read_text()


def test_a_hostile_url_pattern_is_never_the_health_check_and_an_odd_one_is_quoted(blog):
    add_polls(blog)
    urls = blog / "mysite" / "urls.py"
    polls = urls.read_text()
    urls.write_text(polls.replace("path('polls/'", "path('$(touch x)\\n#/'"))
    _, out = run_init(blog)
    text = (blog / "deploy" / "production.yaml").read_text()
    assert "health_check: /\n" in text and "$(" not in text and "$(" not in out
    assert "set app.health_check in deploy/production.yaml to a path that answers 200 without a login" in out

    (blog / "deploy" / "production.yaml").unlink()
    urls.write_text(polls.replace("path('polls/'", "path('a:b@c/'"))
    run_init(blog)
    assert 'health_check: "/a:b@c/"' in (blog / "deploy" / "production.yaml").read_text()
    assert inventory.load(str(blog / "deploy" / "production.yaml")).app.health_check == "/a:b@c/"
    assert not (blog / "x").exists()


# The production settings checked by `manage.py check --deploy`: as the server reads them, but with SQLite in
# memory for the database (the deploy checks do not look at it, and no PostgreSQL driver is installed here).
CHECKED_SETTINGS = ('from .settings_production import *  # noqa\n'
                    'DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}\n')


def manage_production(directory: Path, *args: str, https: str = "1") -> subprocess.CompletedProcess:
    (directory / "mysite" / "settings_checked.py").write_text(CHECKED_SETTINGS)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_") and k != "DATABASE_URL"}
    env = {**clean, "DJANGO_SETTINGS_MODULE": "mysite.settings_checked", "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
           "DJANGO_ALLOWED_HOSTS": "blog.test,www.blog.test", "DATABASE_URL": "postgres:///mysite",
           "DJANGO_STATIC_ROOT": str(directory / "static"), "DJANGO_MEDIA_ROOT": str(directory / "media"),
           "DJANGO_HTTPS": https}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=directory, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_production_settings_pass_check_deploy_without_a_warning(blog):
    run_init(blog)
    checked = manage_production(blog, "check", "--deploy")
    assert checked.returncode == 0, checked.stderr
    assert "System check identified no issues (2 silenced)." in checked.stdout, checked.stdout + checked.stderr
    assert "WARNINGS" not in checked.stdout + checked.stderr
    text = (blog / "mysite" / "settings_production.py").read_text()
    assert "gangway's nginx answers every\n    # http:// request with a redirect" in text
    # On plain HTTP (no domains, no certificate) nothing redirects to HTTPS: those warnings are true, and shown.
    plain = manage_production(blog, "check", "--deploy", https="0")
    assert "security.W008" in plain.stderr and "security.W004" in plain.stderr


def test_a_project_without_default_auto_field_keeps_its_autofield_ids_and_gets_no_w042(blog):
    settings = blog / "mysite" / "settings.py"
    settings.write_text(settings.read_text().replace("DEFAULT_AUTO_FIELD", "# DEFAULT_AUTO_FIELD")
                        .replace("'django.contrib.staticfiles',", "'django.contrib.staticfiles', 'blog',"))
    (blog / "blog" / "migrations").mkdir(parents=True)
    (blog / "blog" / "__init__.py").write_text("")
    (blog / "blog" / "migrations" / "__init__.py").write_text("")
    (blog / "blog" / "models.py").write_text("from django.db import models\n\n\nclass Post(models.Model):\n"
                                             "    title = models.CharField(max_length=200)\n")
    made = subprocess.run([sys.executable, "manage.py", "makemigrations", "blog"], cwd=blog, capture_output=True,
                          text=True, env={k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")})
    assert made.returncode == 0, made.stderr
    assert "models.AutoField(" in (blog / "blog" / "migrations" / "0001_initial.py").read_text()
    laptop = subprocess.run([sys.executable, "manage.py", "check"], cwd=blog, capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")})
    assert "models.W042" in laptop.stderr  # the warning the production settings must not have

    run_init(blog)
    checked = manage_production(blog, "check", "--deploy")
    assert "W042" not in checked.stdout + checked.stderr and "WARNINGS" not in checked.stderr, checked.stderr
    unchanged = manage_production(blog, "makemigrations", "--check", "--dry-run")
    assert unchanged.returncode == 0 and "No changes detected" in unchanged.stdout, unchanged.stdout


def test_a_default_auto_field_of_the_projects_own_is_kept(blog):
    settings = blog / "mysite" / "settings.py"
    assert "DEFAULT_AUTO_FIELD = 'django.db.models.BigAutoField'" in settings.read_text()
    run_init(blog)
    shown = manage_production(blog, "shell", "--command",
                              "from django.conf import settings; print(settings.DEFAULT_AUTO_FIELD)")
    assert shown.stdout.splitlines()[-1] == "django.db.models.BigAutoField", shown.stderr


def django_girls_2018(directory: Path) -> Path:
    """A Django Girls blog as the tutorial had it made with Django 2.2: startproject's settings (their first
    lines name 2.2.4), the blog's URLs with url(), its base template loading staticfiles."""
    startproject(directory)
    settings = directory / "mysite" / "settings.py"
    text = settings.read_text()
    generated = re.search(r"using Django [0-9.]+\.", text).group(0)
    settings.write_text(text.replace(generated, "using Django 2.2.4.")
                        .replace("'django.contrib.staticfiles',", "'django.contrib.staticfiles',\n    'blog',"))
    blog = directory / "blog"
    (blog / "templates" / "blog").mkdir(parents=True)
    (blog / "__init__.py").write_text("")
    (blog / "views.py").write_text("from django.shortcuts import render\n\n\ndef post_list(request):\n"
                                   "    return render(request, 'blog/post_list.html', {})\n")
    (blog / "urls.py").write_text("from django.conf.urls import url\nfrom . import views\n\nurlpatterns = [\n"
                                  "    url(r'^$', views.post_list, name='post_list'),\n"
                                  "    url(r'^post/(?P<pk>\\d+)/$', views.post_list, name='post_detail'),\n]\n")
    (blog / "templates" / "blog" / "post_list.html").write_text(
        "{% load staticfiles %}\n<link rel=\"stylesheet\" href=\"{% static 'css/blog.css' %}\">\n")
    (directory / "mysite" / "urls.py").write_text(
        "from django.conf.urls import include, url\nfrom django.contrib import admin\n\nurlpatterns = [\n"
        "    url(r'^admin/', admin.site.urls),\n    url(r'', include('blog.urls')),\n]\n")
    return directory


def test_a_django_2_2_blog_gets_the_version_it_is_pinned_to_why_and_each_removed_api_it_uses(tmp_path):
    project = django_girls_2018(tmp_path / "blog")
    outcome, out = run_init(project)
    requirements = (project / "requirements.txt").read_text()
    assert "Django>=5.2,<5.3" in requirements
    assert ("requirements.txt pins Django>=5.2,<5.3 (5.2 LTS), not your project's Django 2.2.4 (startproject "
            "made your settings with it): Django 2.2.4 runs neither on Debian 12 (Python 3.11) nor on Debian 13 "
            "(Python 3.13), the Debian releases gangway sets up") in out
    assert "Django 2.2.4 -> 5.2: your code uses 3 thing(s) Django removed on the way" in out
    assert ("  - blog/templates/blog/post_list.html:1 loads the tag library staticfiles: since Django 3.0, "
            "`{% load staticfiles %}` and `{% load admin_static %}` are gone: write `{% load static %}`") in out
    assert ("  - blog/urls.py:1 imports url from django.conf.urls: since Django 4.0, `url()` from "
            "`django.conf.urls` is gone: use `path()` or `re_path()` from `django.urls`") in out
    assert "  - mysite/urls.py:1 imports url from django.conf.urls: since Django 4.0" in out
    assert len(outcome.blocking) == 3 and all("since Django" in problem for problem in outcome.blocking)
    assert "the server's Python" not in out  # nothing was said about a server init has not seen

    # The tutorial's own requirements file pins 2.2: the same uses, and what to pin instead.
    (project / "requirements.txt").write_text("Django~=2.2.4\npsycopg2-binary\n")
    (project / "deploy" / "production.yaml").unlink()
    outcome, out = run_init(project)
    assert "Django 2.2.4 runs neither on Debian 12 (Python 3.11) nor on Debian 13 (Python 3.13)" in out
    assert "pin e.g. Django>=5.2,<5.3 in requirements.txt" in out
    assert "Django 2.2.4 -> 5.2: your code uses 3 thing(s)" in out and len(outcome.blocking) == 3

    # Changed as the hints say: nothing is left, and init says the move was read.
    (project / "blog" / "urls.py").write_text("from django.urls import path\nfrom . import views\n\n"
                                              "urlpatterns = [path('', views.post_list, name='post_list')]\n")
    (project / "mysite" / "urls.py").write_text(
        "from django.contrib import admin\nfrom django.urls import include, path\n\n"
        "urlpatterns = [path('admin/', admin.site.urls), path('', include('blog.urls'))]\n")
    template = project / "blog" / "templates" / "blog" / "post_list.html"
    template.write_text(template.read_text().replace("staticfiles", "static"))
    (project / "requirements.txt").write_text("Django>=5.2,<5.3\npsycopg[binary]\n")
    (project / "deploy" / "production.yaml").unlink()
    outcome, out = run_init(project)
    assert "your code uses none of what Django removed in between" not in out  # 5.2 is pinned: no move
    assert "thing(s)" not in out and outcome.blocking == []


def test_a_project_whose_django_runs_on_the_server_keeps_its_series(blog):
    run_init(blog)
    import django
    series = ".".join(map(str, django.VERSION[:2]))
    assert f"Django>={django.get_version()},<" in (blog / "requirements.txt").read_text()
    _, out = run_init(blog)  # the second run: nothing written, nothing to say about a pin
    assert "pins" not in out
    (blog / "requirements.txt").unlink()
    _, out = run_init(blog)
    assert (f"requirements.txt pins Django>={django.get_version()},<") in out
    assert f"your project's Django {django.get_version()} (startproject made your settings with it)" in out
    assert series in out


def test_the_health_path_is_read_with_debug_off_and_follows_the_language_redirect(blog):
    """A project with i18n_patterns (LocaleMiddleware sends / to /en/) and URLs added only under DEBUG (a debug
    toolbar's /__debug__/, first in the list): the server runs with DEBUG off, where those do not exist."""
    (blog / "pages").mkdir()
    (blog / "pages" / "__init__.py").write_text("")
    (blog / "pages" / "urls.py").write_text(
        "from django.http import HttpResponse\nfrom django.urls import path\n"
        "def view(request):\n    return HttpResponse('ok')\n"
        "urlpatterns = [path('', view), path('about/', view)]\n")
    (blog / "toolbar").mkdir()
    (blog / "toolbar" / "__init__.py").write_text("")
    (blog / "toolbar" / "urls.py").write_text(
        "from django.http import HttpResponse\nfrom django.urls import path\n"
        "urlpatterns = [path('', lambda request: HttpResponse('panels'))]\n")
    (blog / "mysite" / "urls.py").write_text(
        "from django.conf import settings\nfrom django.conf.urls.i18n import i18n_patterns\n"
        "from django.contrib import admin\nfrom django.urls import include, path\n\n"
        "urlpatterns = i18n_patterns(path('admin/', admin.site.urls), path('', include('pages.urls')))\n"
        "if settings.DEBUG:\n    urlpatterns = [path('__debug__/', include('toolbar.urls'))] + urlpatterns\n")
    settings = blog / "mysite" / "settings.py"
    settings.write_text(settings.read_text().replace(
        "'django.contrib.sessions.middleware.SessionMiddleware',",
        "'django.contrib.sessions.middleware.SessionMiddleware',\n    'django.middleware.locale.LocaleMiddleware',"))
    _, out = run_init(blog)
    text = (blog / "deploy" / "production.yaml").read_text()
    assert inventory.load(str(blog / "deploy" / "production.yaml")).app.health_check == "/en/"
    assert "__debug__" not in text and "__debug__" not in out
    assert "# Your URLs answer / with a redirect to this page (read with DEBUG off" in text
    assert "your URLs answer / with a redirect to /en/ (a redirect is not a 2xx), so the health check " \
           "(app.health_check) asks for /en/" in out

    # What production answers there, with the production settings init wrote: 302 at /, 200 at /en/.
    answered = manage_production(blog, "shell", "--command", (
        "from django.test import Client\nfrom django.test.utils import setup_test_environment\n"
        "setup_test_environment()\nc = Client()\n"
        "print(c.get('/').status_code, c.get('/').get('Location'), c.get('/en/').status_code, "
        "c.get('/__debug__/').status_code)"))
    assert answered.stdout.splitlines()[-1] == "302 /en/ 200 404", answered.stderr


def test_a_redirect_view_at_slash_is_followed_to_its_page(blog):
    add_polls(blog)
    urls = blog / "mysite" / "urls.py"
    urls.write_text(urls.read_text().replace(
        "urlpatterns = [", "from django.views.generic import RedirectView\n"
                           "urlpatterns = [path('', RedirectView.as_view(url='/polls/')), "))
    _, out = run_init(blog)
    assert inventory.load(str(blog / "deploy" / "production.yaml")).app.health_check == "/polls/"
    assert "your URLs answer / with a redirect to /polls/" in out
