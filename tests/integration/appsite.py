"""The example app deployed to a provisioned test server, as the deploy tests drive it: one project
repository (tests/apprepo.py), one inventory that points at the server, and the fab commands and checks
those tests share. Module-specific helpers subclass Site in their own module (make_site(..., kind=...))."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from shlex import quote

from tests.integration.inventory import write_inventory
from tests.apprepo import AppRepo
from tests.integration.conftest import APP, DOMAINS, Provisioned, fab
from tests.outside import Response, https_get

# A migration that adds a column to the example app's counter_hit table.
GOOD_MIGRATION = '''from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("counter", "0001_initial")]
    operations = [migrations.AddField("hit", "agent", models.CharField(max_length=200, default=""))]
'''


@dataclass
class Site:
    server: Provisioned
    repo: AppRepo
    inventory: Path

    def command(self, task: str, *args: str) -> list[str]:
        """The fab command line for TASK against this site's inventory, to start in the background."""
        return [sys.executable, "-m", "fabric", task, "--inventory", str(self.inventory), *args]

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


def deployed_id(out: subprocess.CompletedProcess | str) -> str:
    """The release id a deploy's output names (its stdout, or the whole CompletedProcess)."""
    text = out if isinstance(out, str) else out.stdout
    match = re.search(r"deployed (\S+) to", text)
    assert match, text if isinstance(out, str) else out.stdout + out.stderr
    return match.group(1)


def make_site(server: Provisioned, tmp_path_factory, name: str, *, kind: type[Site] = Site, **app_keys) -> Site:
    """A fresh copy of the example app in its own git repository, and an inventory that deploys it to
    SERVER as APP at DOMAINS with a health check; APP_KEYS (keep_releases, ...) are added to the app."""
    tmp = tmp_path_factory.mktemp(name)
    repo = AppRepo(tmp / "project")
    inventory = tmp / "site.yaml"
    write_inventory(server.host, inventory, app=APP, domains=DOMAINS, source=repo.path,
                             health_check="/healthz/", **app_keys)
    return kind(server, repo, inventory)
