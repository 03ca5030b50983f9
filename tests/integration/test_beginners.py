"""From `runserver` to HTTPS, the way a tutorial graduate goes, with the README alone: the Django Girls blog
and the polls tutorial (tests/data, untouched) get gangway installed into their virtualenv, `gangway init`
with its fixes accepted, a commit, `fab provision`, `fab deploy`, `fab import-data` (the posts that were in
SQLite), `fab manage -- createsuperuser` at a real terminal; then a visitor checks over HTTPS that the posts
show, DEBUG is off, the CSS and the logo from the media folder answer, and the superuser can log in.

Then the team's path: a project whose settings already read the environment (DATABASE_URL through
dj-database-url) deploys with no change to it, `fab config --set` reaches the running app, and a release
whose STATIC_ROOT is not where nginx serves from is refused with the fix while the live release serves on.

Each project is its own app on the shared trixie server; the user's own steps run from the project's
directory with the installed package, as they would on a laptop. Only what a test server needs beyond a
real one (its proxy, the test ACME CA, its host keys) is merged from the harness's inventory.
"""

from __future__ import annotations

import fcntl
import html
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import termios
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urljoin

import pytest
import yaml

from tests.integration.inventory import known_hosts_path
from tests.beginners import BLOG, POLLS, Beginner
from tests.installed import environment, install
from tests.integration.conftest import Provisioned
from tests.outside import Response, https_request

SUPERUSER = "admin"
PASSWORD = "Gangway-journey-7319"  # passes Django's password validators
FABFILE = "from gangway.collection import namespace_for\nnamespace = namespace_for(__file__)\n"
DEBUG_PAGE_SIGNS = ("DEBUG = True", "URLconf")  # Django's technical 404 page says both

# The team's project: the polls tutorial with its settings read from the environment the way teams write
# them, dj-database-url for the database, and its own requirements file.
TEAM_SETTINGS = '''"""Settings for mysite: everything that differs between a laptop and the server comes from the environment."""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-only-for-development")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")
CSRF_TRUSTED_ORIGINS = [f"https://{host}" for host in ALLOWED_HOSTS]

INSTALLED_APPS = [
    "polls.apps.PollsConfig",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mysite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "mysite.wsgi.application"

DATABASES = {
    "default": dj_database_url.config(default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}", conn_max_age=600),
}

LANGUAGE_CODE = os.environ.get("DJANGO_LANGUAGE_CODE", "en-us")
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = os.environ.get("DJANGO_STATIC_ROOT", BASE_DIR / "staticfiles")
MEDIA_URL = "media/"
MEDIA_ROOT = os.environ.get("DJANGO_MEDIA_ROOT", BASE_DIR / "media")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
HTTPS = os.environ.get("DJANGO_HTTPS") == "1"
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
'''
TEAM_REQUIREMENTS = "Django>=5.2,<5.3\ndj-database-url>=2,<4\npsycopg[binary]>=3.1,<4\ngunicorn>=22\n"


@pytest.fixture(scope="module")
def gangway_bin(tmp_path_factory) -> Path:
    """`pip install` of this repository into the project's virtualenv, as the README says."""
    return install(tmp_path_factory.mktemp("virtualenv"))


@dataclass
class Project:
    """A user's project on their laptop, and the site it becomes on the shared test server."""

    path: Path
    server: Provisioned
    bin: Path
    app: str

    @property
    def domain(self) -> str:
        return f"{self.app}.test"

    @property
    def inventory(self) -> Path:
        return self.path / "deploy" / "production.yaml"

    def run(self, *argv: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
        """ARGV in the project's directory, its virtualenv active, no terminal."""
        done = subprocess.run(list(argv), cwd=self.path, env=self.env(), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        return done

    def env(self) -> dict[str, str]:
        # Host keys of the test server, should anything connect before the inventory names them.
        return environment(self.bin, FABRIC_GANGWAY_KNOWN_HOSTS=str(self.path.parent / "known_hosts"))

    def fab(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(str(self.bin / "python"), "-m", "fabric", *args, check=check)

    def gangway(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(str(self.bin / "python"), "-m", "gangway", *args, check=check)

    def init(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        host = self.server.host
        return self.gangway("init", "--host", host.address, "--user", "root", "--key", str(host.ssh_key),
                            "--domain", self.domain, "--email", f"admin@{self.domain}", "--name", self.app,
                            *args, check=check)

    def git(self, *args: str) -> str:
        return self.run("git", "-c", "user.name=Ola", "-c", "user.email=ola@app.test", *args).stdout.strip()

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)

    def settings(self) -> dict:
        return yaml.safe_load(self.inventory.read_text())

    def reach_the_test_server(self) -> None:
        """Merge into the project's inventory what the test server needs and a real one does not: the
        harness's proxy, its ACME directory and CA bundle, and the server's host keys (committed beside the
        inventory, as a team keeps them)."""
        harness = yaml.safe_load(self.server.inventory.read_text())
        inventory = self.settings()
        inventory["acme"].update(directory=harness["acme"]["directory"], ca_bundle=harness["acme"]["ca_bundle"])
        inventory["proxy"] = harness["proxy"]
        shutil.copyfile(self.path.parent / "known_hosts", self.inventory.with_name("production.known_hosts"))
        inventory["known_hosts"] = "production.known_hosts"
        self.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))

    def request(self, path: str, method: str = "GET", headers: dict[str, str] | None = None,
                body: bytes = b"") -> Response:
        host = self.server.host
        return https_request(host.address, self.domain, host.acme_root, path, method, headers, body)

    def page(self, path: str) -> str:
        """The page at PATH, which must answer 200, its HTML entities decoded."""
        response = self.request(path)
        assert response.status == 200, f"{path}: {response.status}\n{response.body[:1000]}"
        return html.unescape(response.body)

    def sql(self, query: str) -> str:
        out = self.server.root(f"cd /tmp && runuser -u {self.app} -- psql -XtAc {shlex.quote(query)}")
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()


def new_project(beginner: Beginner, server: Provisioned, bin_dir: Path, tmp_path_factory, app: str) -> Project:
    """The beginner's project as its author has it: their files and SQLite database, put under git as the
    tutorial says (its .gitignore keeps db.sqlite3 out of the commit)."""
    tmp = tmp_path_factory.mktemp(app)
    shutil.copyfile(known_hosts_path(server.inventory), tmp / "known_hosts")
    project = Project(beginner.copy(tmp / beginner.directory), server, bin_dir, app)
    project.git("init", "-q")
    project.commit("my site")
    return project


def through_a_terminal(project: Project, argv: list[str], answers: list[tuple[str, str]],
                       timeout: float = 180) -> tuple[int, str]:
    """Run ARGV in PROJECT with a pseudo-terminal as its stdin, stdout and stderr, as a person at a terminal
    does; each (prompt, reply) answers the prompt when it appears, in order. Returns the exit status and what
    the terminal showed. Bounded: the process group is killed after TIMEOUT seconds."""
    master, slave = os.openpty()
    process = subprocess.Popen(argv, cwd=project.path, env=project.env(), stdin=slave, stdout=slave, stderr=slave,
                               start_new_session=True, preexec_fn=_take_the_terminal)
    os.close(slave)
    shown, searched_from, pending = b"", 0, list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the other side of the terminal is closed
                break
            if not chunk:
                break
            shown += chunk
            if pending and pending[0][0].encode() in shown[searched_from:]:
                searched_from = len(shown)
                os.write(master, pending.pop(0)[1].encode() + b"\n")
        else:
            raise AssertionError(f"{' '.join(argv)}: still running after {timeout} s; the terminal showed:\n"
                                 f"{shown.decode(errors='replace')}")
        return process.wait(timeout=30), shown.decode(errors="replace")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        os.close(master)


def _take_the_terminal() -> None:
    """In the child, a session leader by then: make its stdin its controlling terminal, in the foreground, as
    a login shell's is (Fabric then switches it to character mode, echo off, and forwards each key)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def create_superuser(project: Project) -> None:
    """`fab manage -- createsuperuser` at a real terminal, typing the password twice at its prompts."""
    argv = [str(project.bin / "python"), "-m", "fabric", "manage", "--", "createsuperuser",
            "--username", SUPERUSER, "--email", f"{SUPERUSER}@{project.domain}"]
    status, shown = through_a_terminal(project, argv, [("Password:", PASSWORD), ("Password (again):", PASSWORD)])
    assert status == 0 and "Superuser created successfully" in shown, shown
    assert PASSWORD not in shown, "the password was echoed"


def log_in(project: Project, models_page: str) -> None:
    """A real admin login, as a browser does it: the form's CSRF token and cookie, a POST over HTTPS, then the
    admin index with the session cookie, which lists the app's models (MODELS_PAGE is one of their links)."""
    form = project.request("/admin/login/?next=/admin/")
    assert form.status == 200, form.body[:500]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.body)
    assert token and "csrftoken" in form.cookies, form.body[:500]
    origin = f"https://{project.domain}"
    answer = project.request(
        "/admin/login/?next=/admin/", method="POST",
        headers={"Cookie": f"csrftoken={form.cookies['csrftoken']}", "Origin": origin,
                 "Referer": f"{origin}/admin/login/", "Content-Type": "application/x-www-form-urlencoded"},
        body=urlencode({"csrfmiddlewaretoken": token.group(1), "username": SUPERUSER, "password": PASSWORD,
                        "next": "/admin/"}).encode())
    assert answer.status == 302 and answer.header("location") == "/admin/", f"{answer.status}: {answer.body[:1000]}"
    assert "sessionid" in answer.cookies, answer.headers
    admin = project.request("/admin/", headers={"Cookie": f"sessionid={answer.cookies['sessionid']}"})
    assert admin.status == 200 and models_page in admin.body, f"{admin.status}: {admin.body[:1000]}"


def assert_production_pages(project: Project, beginner: Beginner) -> str:
    """What a visitor sees over HTTPS: the database's content on the home page, a plain 404 (DEBUG off), and
    the stylesheet with what it links to answering. Returns the home page."""
    home = project.page(beginner.home)
    for text in beginner.shown:
        assert text in home, f"{text!r} is not on {beginner.home}:\n{home[:2000]}"
    for text in beginner.hidden:
        assert text not in home

    missing = project.request("/no-such-page/")
    assert missing.status == 404
    assert not any(sign in missing.body for sign in DEBUG_PAGE_SIGNS), f"DEBUG is on:\n{missing.body[:1000]}"

    stylesheets = re.findall(r'href="(/static/[^"]+\.css)"', home)
    assert stylesheets, f"no stylesheet under /static/ on {beginner.home}:\n{home[:2000]}"
    for stylesheet in stylesheets:
        css = project.request(stylesheet)
        assert css.status == 200 and "text/css" in (css.header("content-type") or ""), f"{stylesheet}: {css.status}"
        for linked in re.findall(r'url\(["\']?([^"\')]+)["\']?\)', css.body):
            image = urljoin(stylesheet, linked)
            assert project.request(image).status == 200, f"{image}, linked from {stylesheet}"
    return home


def tutorial_to_https(beginner: Beginner, project: Project, models_page: str) -> None:
    # gangway init, fixes accepted: a fabfile, the inventory, production settings, a requirements file.
    init = project.init("--yes")
    fabfile = project.path / "fabfile.py"
    assert fabfile.read_text() == FABFILE, init.stdout
    settings = project.settings()
    assert settings["app"]["name"] == project.app and settings["app"]["domains"] == [project.domain]
    # The tutorial's home page is the health check: the polls tutorial has no page at /, so init picks its polls.
    assert settings["app"]["health_check"] == beginner.home, init.stdout
    assert settings["app"]["settings_module"] == "mysite.settings_production", init.stdout
    production = (project.path / "mysite" / "settings_production.py").read_text()
    assert "from .settings import *" in production
    requirements = (project.path / "requirements.txt").read_text().lower()
    assert "django" in requirements and "psycopg" in requirements and "gunicorn" in requirements
    # runserver keeps working on the laptop: the settings it uses are untouched.
    assert project.git("status", "--porcelain", "mysite/settings.py") == ""

    project.reach_the_test_server()
    project.commit("Deploy with gangway")
    project.fab("provision")
    project.fab("deploy")

    # The posts that were in SQLite move to PostgreSQL; the media folder goes along.
    project.fab("import-data", "--yes")
    create_superuser(project)

    assert_production_pages(project, beginner)
    log_in(project, models_page)


def test_the_django_girls_blog_goes_from_the_tutorial_to_https(trixie, gangway_bin, tmp_path_factory):
    project = new_project(BLOG, trixie, gangway_bin, tmp_path_factory, "blog")
    assert "db.sqlite3" not in project.git("ls-files")  # the tutorial's .gitignore: import-data reads the file
    tutorial_to_https(BLOG, project, models_page='href="/admin/blog/post/"')
    home = project.page("/")
    logos = re.findall(r'src="(/media/[^"]+)"', home)
    assert logos, home[:2000]
    for logo in logos:  # kept in the repository's media folder, uploaded by import-data
        image = project.request(logo)
        assert image.status == 200 and image.header("content-type") == "image/png", f"{logo}: {image.status}"


def test_the_polls_tutorial_goes_from_the_tutorial_to_https(trixie, gangway_bin, tmp_path_factory):
    project = new_project(POLLS, trixie, gangway_bin, tmp_path_factory, "polls")
    tutorial_to_https(POLLS, project, models_page='href="/admin/polls/question/"')
    assert project.sql("select count(*) from polls_choice") == "5"


def test_a_team_project_that_reads_its_environment_deploys_unchanged(trixie, gangway_bin, tmp_path_factory):
    project = new_project(POLLS, trixie, gangway_bin, tmp_path_factory, "team")
    (project.path / "mysite" / "settings.py").write_text(TEAM_SETTINGS)
    (project.path / "requirements.txt").write_text(TEAM_REQUIREMENTS)
    project.commit("Settings from the environment")

    # Nothing to fix: init writes the fabfile and the inventory, and leaves the project's own files alone.
    init = project.init()
    assert (project.path / "fabfile.py").read_text() == FABFILE
    app = project.settings()["app"]
    assert "settings_module" not in app, init.stdout
    # Named team, its package is mysite: Gunicorn must load mysite.wsgi. No page at /: the health check asks
    # for the polls.
    assert app["wsgi_module"] == "mysite.wsgi" and app["health_check"] == "/polls/", init.stdout
    written = sorted(project.git("status", "--porcelain", "--untracked-files=all").splitlines())
    assert written == ["?? deploy/production.yaml", "?? fabfile.py"], init.stdout

    project.reach_the_test_server()
    project.commit("Deploy with gangway")
    project.fab("provision")
    project.fab("deploy")
    # DATABASE_URL took it to its PostgreSQL database: the tables are there, and empty.
    assert "No polls are available." in project.page("/polls/")
    assert project.sql("select count(*) from polls_question") == "0"

    # fab config: the app's own variables, values hidden unless asked, applied to the running app.
    token = "team-token-5f1c9a"
    changed = project.fab("config", "--set", "DJANGO_LANGUAGE_CODE=de", "--set", f"TEAM_API_TOKEN={token}")
    assert token not in changed.stdout + changed.stderr
    listed = project.fab("config")
    assert "DJANGO_LANGUAGE_CODE" in listed.stdout and "TEAM_API_TOKEN" in listed.stdout
    assert token not in listed.stdout + listed.stderr
    assert token in project.fab("config", "--show").stdout
    assert 'lang="de"' in project.page("/admin/login/")
    project.fab("config", "--unset", "DJANGO_LANGUAGE_CODE")
    assert 'lang="en-us"' in project.page("/admin/login/")

    # A STATIC_ROOT of its own, where nginx does not serve from: refused with the fix, the live release serves on.
    settings = project.path / "mysite" / "settings.py"
    settings.write_text(settings.read_text().replace(
        'os.environ.get("DJANGO_STATIC_ROOT", BASE_DIR / "staticfiles")', '"/var/www/team/static"'))
    project.commit("Static files where our old server had them")
    refused = project.fab("deploy", check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0, said
    assert "STATIC_ROOT" in said and "DJANGO_STATIC_ROOT" in said, said
    assert "No polls are available." in project.page("/polls/")
