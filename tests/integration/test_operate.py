"""`fab manage`, `fab config`, `fab import-data` and the inventory's app.env, on a real server: a command and its
exit status, createsuperuser answered through a real terminal, variables that reach the app verbatim and never
show in fab's output, the local SQLite content and media served over HTTPS after an import that is refused the
second time. Refused before anything changes, the live release serving on: `fab config` on a full disk (one
message, with the free space, no partial upload), an environment past Linux's limits (from fab config, or
from the inventory's app.env on a deploy), a config change the readiness check refuses (DEBUG turned on)."""

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
from tests.integration.appsite import Site, free_bytes, make_site, mount_small
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
    # The gates of a deploy that the environment decides ran in the new instance, sealed, and passed.
    assert "checks: the readiness check and manage.py check --deploy passed with the new environment" in out.stdout
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
    assert "still serving (read back: live, its instance active)" in broken.stdout + broken.stderr, \
        broken.stdout + broken.stderr
    assert site.answering() == live
    assert "GUNICORN_CMD_ARGS" not in site.run("config").stdout


def test_a_config_change_that_turns_debug_on_is_refused_before_a_new_instance_starts(site):
    """The app would answer its health check with DEBUG on; the readiness check a deploy runs refuses it, and
    runs for `fab config` too, with the new values, before anything starts."""
    live, releases = site.answering(), site.ls("releases")
    refused = site.run("config", "--set", "DJANGO_DEBUG=1", check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0, said
    assert "was not started: the settings are not ready for production, with the new environment" in said, said
    assert "DEBUG is on in production" in said and "The previous values were restored." in said, said
    assert "still serving (read back: live, its instance active)" in said, said
    assert site.answering() == live and site.ls("releases") == releases
    assert "DJANGO_DEBUG" not in site.run("config").stdout


def uploads_left(site) -> str:
    return site.root(f"ls -a /srv/{APP}/releases | grep '^\\.upload-' || true").strip()


def test_a_full_disk_during_config_set_is_one_clear_message_and_changes_nothing(site):
    name = "GANGWAY_TEST_FULL_DISK"
    site.run("config", "--unset", name)  # not set, whatever ran before
    before, releases = site.answering(), f"/srv/{APP}/releases"
    assert uploads_left(site) == ""
    mount_small(site, releases, "1024k", keep_content=True)  # the releases stay where they were
    try:
        site.root(f"head -c {free_bytes(site, releases) - 4096} /dev/zero > {releases}/.filler")
        print(f"free in releases/: {free_bytes(site, releases) / 1024:.1f} KiB")
        failed = site.run("config", "--set", f"{name}=on", check=False)
        print(failed.stderr.strip())
        assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stdout + failed.stderr
        assert failed.stderr.count("not enough disk space") == 1, failed.stderr
        assert re.search(r"\d+\.\d MiB free in /srv/\S+/releases/", failed.stderr), failed.stderr
        assert "nothing changed" in failed.stderr, failed.stderr
        assert "it needs about" in failed.stderr and "MiB kept spare" in failed.stderr, failed.stderr
        assert uploads_left(site) == "", site.root(f"ls -la {releases}")
        assert site.answering() == before
    finally:
        site.root(f"umount {releases}")
        site.run("config", "--unset", name, check=False)
    assert uploads_left(site) == ""
    assert name not in site.run("config").stdout
    assert site.env(name) == "<unset>"
    assert site.answering() == before


# Values under Linux's limit for one string (so fab itself can be given them on its command line), which
# together pass its limit for a program's whole environment (ARG_MAX: 2 MiB with the usual 8 MiB stack).
CHUNK = "x" * (100 * 1024)


def test_config_past_the_environment_limit_is_refused_before_anything_changes(site):
    arg_max = int(site.root("getconf ARG_MAX"))
    first = [f"GANGWAY_TEST_BIG_{i}" for i in range(arg_max // len(CHUNK) // 2)]
    second = [f"GANGWAY_TEST_MORE_{i}" for i in range(arg_max // len(CHUNK) // 2 + 2)]
    site.run("config", *[a for n in first + second for a in ("--unset", n)])  # none set, whatever ran before
    try:
        site.run("config", *[a for n in first for a in ("--set", f"{n}={CHUNK}")])  # about half the limit
        before, config = site.answering(), site.root(f"sha256sum /srv/{APP}/shared/config.env")
        refused = site.run("config", *[a for n in second for a in ("--set", f"{n}={CHUNK}")], check=False)
        print(refused.stderr.strip()[:600])
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stdout + refused.stderr
        assert "past the" in refused.stderr and "ARG_MAX" in refused.stderr, refused.stderr
        assert "the app would never start" in refused.stderr and "Nothing was changed" in refused.stderr
        assert CHUNK[:64] not in refused.stdout + refused.stderr  # sizes, never values
        assert site.root(f"sha256sum /srv/{APP}/shared/config.env") == config
        assert site.answering() == before  # the same instance: no restart either
        listed = site.run("config").stdout
        assert not [n for n in second if n in listed], listed
    finally:
        site.run("config", *[a for n in first + second for a in ("--unset", n)], check=False)
    assert "GANGWAY_TEST_" not in site.run("config").stdout


def test_an_inventory_env_value_linux_will_not_pass_is_refused_before_the_deploy_changes_anything(site):
    shared = site.inventory.read_text()
    before, releases, failed = site.answering(), site.ls("releases"), site.ls("failed")
    big = "y" * (128 * 1024 + 1)
    write_inventory(site.server.host, site.inventory, app=APP, domains=DOMAINS, source=site.repo.path,
                    health_check="/healthz/", env={"GANGWAY_TEST_HUGE": big})
    try:
        refused = site.deploy(check=False)
    finally:
        site.inventory.write_text(shared)
    print(refused.stderr.strip()[:600])
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stdout + refused.stderr
    assert "GANGWAY_TEST_HUGE" in refused.stderr and "app.env in the inventory" in refused.stderr, refused.stderr
    assert "MAX_ARG_STRLEN" in refused.stderr and "the app would never start" in refused.stderr, refused.stderr
    assert "Nothing was changed" in refused.stderr, refused.stderr
    assert big[:64] not in refused.stdout + refused.stderr
    assert site.ls("releases") == releases and site.ls("failed") == failed
    assert site.answering() == before
    assert site.env("GANGWAY_TEST_HUGE") == "<unset>"


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
    assert ("before the import (read back): of the models imported, the server's database held 3 row(s): "
            "counter.hit: 3;") in replaced.stdout, replaced.stdout
    backup = re.search(r"backup taken first: (\S+\.dump)", replaced.stdout)
    assert backup, replaced.stdout
    assert site.server.root(f"test -s {backup[1]}").returncode == 0
    assert site.get("/paths/").body.split("\n") == LOCAL_PATHS

    # After a flush the server's database holds nothing: a --replace says so, read back, not that it replaced data.
    site.manage("flush", "--noinput")
    refilled = site.run("import-data", "--replace", "--no-media", env=laptop)
    assert ("before the import (read back): of the models imported, the server's database held no rows; backup "
            "taken first: ") in refilled.stdout, refilled.stdout
    assert "counter.hit: 3" in refilled.stdout and site.get("/paths/").body.split("\n") == LOCAL_PATHS
