"""The example app deployed to a provisioned test server, as the deploy tests drive it: one project
repository (tests/apprepo.py), one inventory that points at the server, and the fab commands and checks
those tests share. Module-specific helpers subclass Site in their own module (make_site(..., kind=...))."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from shlex import quote

from tests.integration.inventory import write_inventory
from tests.apprepo import AppRepo
from tests.integration.conftest import APP, DOMAINS, REPO, Provisioned, fab
from tests.outside import Response, https_get

# A migration that adds a column to the example app's counter_hit table; nullable, so the live release
# keeps working while it is applied (the deploy refuses a NOT NULL one without a database default).
GOOD_MIGRATION = '''from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("counter", "0001_initial")]
    operations = [migrations.AddField("hit", "agent", models.CharField(max_length=200, null=True))]
'''


@dataclass
class Site:
    server: Provisioned
    repo: AppRepo
    inventory: Path

    def command(self, task: str, *args: str) -> list[str]:
        """The fab command line for TASK against this site's inventory, to start in the background."""
        return [sys.executable, "-m", "fabric", task, "--inventory", str(self.inventory), *args]

    def start(self, task: str, *args: str) -> "Run":
        """fab TASK ... running in the background (stdin /dev/null), to read as it goes or interrupt."""
        return Run(self.command(task, *args))

    def fab(self, task: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return fab(task, "--inventory", str(self.inventory), *args, check=check)

    def deploy(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.fab("deploy", *args, check=check)

    def rollback(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.fab("rollback", *args, check=check)

    def get(self, path: str = "/version/", timeout: float = 10) -> Response:
        host = self.server.host
        return https_get(host.address, DOMAINS[0], host.acme_root, path, timeout=timeout)

    def answering(self) -> str:
        """The live release's answer to /version/ ("VERSION RELEASE"); fails unless it is a 200."""
        response = self.get()
        assert response.status == 200, f"{response.status}: {response.body[:500]}"
        return response.body.strip()

    def root(self, command: str, check: bool = True) -> str:
        """The output of a root command on the server; with `check`, fails unless it succeeded."""
        out = self.server.root(command)
        if check:
            assert out.returncode == 0, f"{command}\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def sql(self, query: str) -> str:
        return self.root(f"cd /tmp && runuser -u {APP} -- psql -XtAc {quote(query)}").strip()

    def hits(self) -> int:
        return int(self.sql("select count(*) from counter_hit"))

    def ls(self, directory: str) -> list[str]:
        return self.server.root(f"ls -1 /srv/{APP}/{directory}").stdout.split()


class Run:
    """A fab command running in the background; its output is read as it comes, every wait is bounded."""

    def __init__(self, argv: list[str]):
        self.started = time.monotonic()
        self.process = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.process.stdout, self.stdout, True)),
                         threading.Thread(target=self._read, args=(self.process.stderr, self.stderr, False))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, into: list[str], announce: bool) -> None:
        for line in stream:
            into.append(line)
            if announce:
                self.lines.put(line)

    def wait_for_line(self, matches, timeout: float = 120) -> str:
        """The first stdout line (from now on) that `matches`; fails if the run ends or time is up first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    self.finish(5)
                    raise AssertionError(f"the run ended before the line we waited for:\n{self.output}")
                continue
            if matches(line):
                return line
        raise AssertionError(f"no such line within {timeout} s:\n{self.output}")

    def finish(self, timeout: float = 300) -> subprocess.CompletedProcess:
        try:
            self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=10)
            for reader in self._readers:
                reader.join(timeout=10)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, "".join(self.stdout),
                                           "".join(self.stderr))

    def stop(self) -> None:
        """End the run if it is still going (a test that failed midway)."""
        if self.process.poll() is None:
            self.finish(5)

    @property
    def output(self) -> str:
        return "".join(self.stdout) + "\n--- stderr:\n" + "".join(self.stderr)


def deployed_id(out: subprocess.CompletedProcess | str) -> str:
    """The release id a deploy's output names (its stdout, or the whole CompletedProcess)."""
    text = out if isinstance(out, str) else out.stdout
    match = re.search(r"deployed (\S+) to", text)
    assert match, text if isinstance(out, str) else out.stdout + out.stderr
    return match.group(1)


# Drops the tables of the project's own apps (every app but Django's own) and forgets their migrations, so
# that the next deploy migrates the example app from scratch. Read by psql from stdin: no value is spliced in.
FORGET_PROJECT_APPS = r"""
DO $$
DECLARE label text; t text;
BEGIN
  IF to_regclass('public.django_migrations') IS NULL THEN RETURN; END IF;
  FOR label IN SELECT DISTINCT app FROM django_migrations
               WHERE app NOT IN ('admin', 'auth', 'contenttypes', 'sessions') LOOP
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public'
             AND starts_with(tablename, label || '_') LOOP
      EXECUTE format('DROP TABLE %I CASCADE', t);
    END LOOP;
    DELETE FROM django_migrations WHERE app = label;
  END LOOP;
END $$;
"""


def forget_project_apps(provisioned: Provisioned) -> None:
    """Put the server's database back to where no migration of the project's apps ran. Modules share a
    server, and a module that left a migration applied (a test of a refused or a reversed one) would make the
    next module's first deploy or rollback meet a schema ahead of its code: every module starts from here."""
    psql = f"cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d {quote(APP)}"
    out = subprocess.run(provisioned.host.ssh_argv(f"sudo -n sh -c {quote(psql)}", user="deploy"),
                         input=FORGET_PROJECT_APPS, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"could not reset the database of {APP}:\n{out.stdout}\n{out.stderr}"


def make_site(provisioned: Provisioned, tmp_path_factory, name: str, *, kind: type[Site] = Site,
              **app_keys) -> Site:
    """A fresh copy of the example app in its own git repository, and an inventory that deploys it to
    PROVISIONED as APP at DOMAINS with a health check; APP_KEYS (keep_releases, server, ...) are added to the
    app. The database starts with none of the project's migrations applied (forget_project_apps)."""
    forget_project_apps(provisioned)
    tmp = tmp_path_factory.mktemp(name)
    repo = AppRepo(tmp / "project")
    inventory = tmp / "site.yaml"
    write_inventory(provisioned.host, inventory, app=APP, domains=DOMAINS, source=repo.path,
                    health_check="/healthz/", **app_keys)
    return kind(provisioned, repo, inventory)


def mount_small(site: Site, directory: str, size: str, keep_content: bool = False) -> None:
    """A small tmpfs over `directory`, owned and permitted as the directory was. With `keep_content`, what
    the directory held is copied onto it first and `size` is the room left on top of that: the live release's
    Python environment must stay where it was, since its Gunicorn workers import from it."""
    d = quote(directory)
    uid, gid, mode = site.root(f"stat -c '%u %g %a' {d}").split()
    copy = "/var/tmp/gangway-test-copy"
    if keep_content:
        site.root(f"rm -rf {copy} && cp -a {d} {copy}")
    site.root(f"mount -t tmpfs -o size={'1G' if keep_content else size},uid={uid},gid={gid},mode=0{mode} "
              f"gangway-test-full {d}")
    if keep_content:  # copied in, then shrunk to what the copy takes there plus `size`
        site.root(f"cp -a {copy}/. {d}/ && rm -rf {copy}")
        used_kib = int(site.root(f"df -k --output=used {d} | tail -n 1"))
        site.root(f"mount -o remount,size={used_kib + int(size.rstrip('k'))}k {d}")


def free_bytes(site: Site, directory: str) -> int:
    return int(site.root(f"df -B1 --output=avail {quote(directory)} | tail -n 1"))
