"""`fab manage`, `fab config`, `fab import-data` and the inventory's app.env, on a real server: a command and its
exit status, createsuperuser answered through a real terminal, variables that reach the app verbatim and never
show in fab's output, the local SQLite content and media served over HTTPS after an import that is refused the
second time."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import subprocess
import sys
import termios
import time

import pytest

from tests.integration.inventory import write_inventory
from tests.integration.appsite import Site, make_site
from tests.integration.conftest import APP, DOMAINS, REPO

# Views the test's copy of the example app adds: an environment variable, and the paths of every Hit row.
EXTRA_VIEWS = '''import os

from django.http import HttpResponse
from django.views.decorators.cache import never_cache

from counter.models import Hit


@never_cache
def env(request, name):
    return HttpResponse(os.environ.get(name, "<unset>"), content_type="text/plain; charset=utf-8")


@never_cache
def paths(request):
    return HttpResponse("\\n".join(Hit.objects.order_by("pk").values_list("path", flat=True)),
                        content_type="text/plain; charset=utf-8")
'''
URLS = '''from django.contrib import admin
from django.urls import path

from counter import views
from mysite import extra

urlpatterns = [
    path("", views.index, name="index"),
    path("healthz/", views.healthz, name="healthz"),
    path("version/", views.version, name="version"),
    path("env/<str:name>/", extra.env),
    path("paths/", extra.paths),
    path("admin/", admin.site.urls),
]
'''
HOSTILE = """it's "quoted" $(touch /tmp/pwned) `id` \\ and  spaces $HOME"""
PASSWORD = "correct-horse-battery-97"
LOCAL_PATHS = ["/first/", "/second/", "/caf\u00e9/"]
LOGO = "not really a PNG, but a file all the same\n"


class OpsSite(Site):
    def run(self, task: str, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """fab TASK --inventory ... ARGS, with no terminal (stdin is /dev/null) and the laptop's environment."""
        result = subprocess.run(self.command(task, *args), cwd=REPO, capture_output=True, text=True, timeout=600,
                                stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
        if check and result.returncode != 0:
            raise AssertionError(f"fab {task} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n"
                                 f"{result.stderr}")
        return result

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("manage", "--", *args, check=check)

    def env(self, name: str) -> str:
        response = self.get(f"/env/{name}/")
        assert response.status == 200, response
        return response.body


def _own_terminal() -> None:
    """In the child: a new session whose controlling terminal is its stdin, as a terminal window gives."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def drive(argv: list[str], answers: list[tuple[str, str]], timeout: float = 180) -> tuple[int, str]:
    """Run `argv` on a new pseudo-terminal, typing each answer when its prompt (a regex) shows; (status, output)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(argv, cwd=REPO, stdin=slave, stdout=slave, stderr=slave, preexec_fn=_own_terminal)
    os.close(slave)
    output, answered_at, pending = b"", 0, list(answers)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                raise AssertionError(f"no end within {timeout} s; the terminal showed:\n"
                                     f"{output.decode(errors='replace')}")
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every process on the terminal is gone
                    chunk = b""
                if not chunk and proc.poll() is not None:
                    break
                output += chunk
                if pending and re.search(pending[0][0], output[answered_at:].decode(errors="replace")):
                    os.write(master, pending.pop(0)[1].encode() + b"\r")
                    answered_at = len(output)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
    return proc.wait(timeout=10), output.decode(errors="replace")


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory):
    site = make_site(trixie, tmp_path_factory, "operate", kind=OpsSite, env={"INVENTORY_NOTE": "from the inventory"})
    site.repo.write("mysite/extra.py", EXTRA_VIEWS)
    site.repo.write("mysite/urls.py", URLS)
    site.repo.commit("views that show the environment and the rows")
    site.deploy()
    return site


def test_a_local_file_goes_along_for_the_command_that_reads_it_and_is_removed_after(site, tmp_path):
    fixture = tmp_path / "one hit.json"
    fixture.write_text('[{"model": "counter.hit", "pk": 999, "fields": {"path": "/from-a-file/", '
                       '"created": "2026-01-01T00:00:00Z"}}]')
    out = site.run("manage", "--file", str(fixture), "--", "loaddata", str(fixture))
    assert "Installed 1 object(s)" in out.stdout, out.stdout + out.stderr
    assert site.sql("select path from counter_hit where id = 999") == "/from-a-file/"
    assert ".upload-" not in site.root(f"ls -a /srv/{APP}/releases")


def test_a_management_command_runs_in_the_live_release_with_its_words_and_exit_status(site):
    out = site.manage("shell", "-c", "import os, sys; print('hello, ' + 'world', os.environ['GANGWAY_RELEASE']); "
                                     "sys.exit(3)", check=False)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "hello, world " in out.stdout, out.stdout + out.stderr
    assert site.manage("check").returncode == 0
    assert site.manage("shell").returncode == 0  # without a terminal its input ends: no waiting for ever


def test_the_inventory_env_reaches_the_app_and_leaves_it_when_removed(site):
    assert site.env("INVENTORY_NOTE") == "from the inventory"
    write_inventory(site.server.host, site.inventory, app=APP, domains=DOMAINS, source=site.repo.path,
                             health_check="/healthz/")
    site.deploy()
    assert site.env("INVENTORY_NOTE") == "<unset>"
    assert "INVENTORY_NOTE" not in site.root(f"cat /srv/{APP}/shared/env")


def test_config_sets_a_value_verbatim_without_ever_printing_it_and_unsets_it(site):
    before = site.answering()
    out = site.run("config", "--set", f"GREETING={HOSTILE}", "--set", "OTHER=1")
    assert HOSTILE not in out.stdout + out.stderr and "pwned" not in out.stdout + out.stderr
    assert site.env("GREETING") == HOSTILE
    assert site.answering() != before  # a new instance took the traffic
    assert site.server.root("test -e /tmp/pwned").returncode != 0
    assert site.root(f"stat -c '%U:%G %a' /srv/{APP}/shared/config.env").strip() == "root:root 600"
    listed = site.run("config")
    assert "GREETING" in listed.stdout and HOSTILE not in listed.stdout
    assert f"GREETING={HOSTILE}" in site.run("config", "--show").stdout
    assert HOSTILE in site.manage("shell", "-c", "import os; print(os.environ['GREETING'])").stdout

    site.run("config", "--unset", "GREETING")
    assert site.env("GREETING") == "<unset>"
    assert site.env("OTHER") == "1"


def test_a_config_change_that_breaks_the_app_is_undone_and_the_live_release_keeps_serving(site):
    live = site.answering()
    broken = site.run("config", "--set", "GUNICORN_CMD_ARGS=--workers=not-a-number", check=False)
    assert broken.returncode != 0, broken.stdout
    assert "still serving" in broken.stdout + broken.stderr, broken.stdout + broken.stderr
    assert site.answering() == live
    assert "GUNICORN_CMD_ARGS" not in site.run("config").stdout


def test_createsuperuser_asks_its_questions_through_a_terminal(site):
    status, screen = drive(site.command("manage", "--", "createsuperuser"), [
        (r"Username[^:]*: ", "ada"), (r"Email address: ", "ada@app.test"),
        (r"Password: ", PASSWORD), (r"Password \(again\): ", PASSWORD)])
    assert status == 0, screen
    assert "Superuser created successfully" in screen, screen
    check = site.manage("shell", "-c", "from django.contrib.auth.models import User; u = User.objects.get("
                                       f"username='ada'); print('superuser', u.is_superuser, "
                                       f"u.check_password('{PASSWORD}'))")
    assert "superuser True True" in check.stdout, check.stdout
    status, screen = drive(site.command("manage", "--", "shell", "-c", "import sys; sys.exit(5)"), [])
    assert status == 5, screen  # through the terminal too, the command's status is fab's


def test_the_local_database_and_media_come_along_once(site):
    laptop = {"DJANGO_DEBUG": "1"}
    manage_py = [sys.executable, "manage.py"]
    subprocess.run([*manage_py, "migrate", "-v", "0"], cwd=site.repo.path, env={**os.environ, **laptop},
                   check=True, capture_output=True)
    subprocess.run([*manage_py, "shell", "-c", "from counter.models import Hit\n"
                    f"for p in {LOCAL_PATHS!r}: Hit.objects.create(path=p)"],
                   cwd=site.repo.path, env={**os.environ, **laptop}, check=True, capture_output=True)
    (site.repo.path / "media" / "uploads").mkdir(parents=True)
    (site.repo.path / "media" / "uploads" / "logo.png").write_text(LOGO)
    site.manage("flush", "--noinput")  # whatever earlier tests left in the server's database

    out = site.run("import-data", "--yes", env=laptop)
    assert "counter.hit: 3" in out.stdout, out.stdout
    assert site.get("/paths/").body.split("\n") == LOCAL_PATHS
    logo = site.get("/media/uploads/logo.png")
    assert (logo.status, logo.body) == (200, LOGO)
    leftovers = site.root(f"ls -a /srv/{APP}/releases /srv/{APP}/shared/media")
    assert ".upload-" not in leftovers and ".gangway-upload-" not in leftovers, leftovers

    again = site.run("import-data", "--yes", env=laptop, check=False)
    assert again.returncode != 0 and "--replace" in again.stdout + again.stderr, again.stdout + again.stderr
    assert site.get("/paths/").body.split("\n") == LOCAL_PATHS

    replaced = site.run("import-data", "--replace", "--no-media", env=laptop)
    backup = re.search(r"previous data: (\S+\.dump)", replaced.stdout)
    assert backup, replaced.stdout
    assert site.server.root(f"test -s {backup[1]}").returncode == 0
    assert site.get("/paths/").body.split("\n") == LOCAL_PATHS
