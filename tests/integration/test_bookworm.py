"""Debian 12 "bookworm" (Python 3.11, PostgreSQL 15, nginx 1.22) gets the same result as Debian 13."""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.integration.inventory import write_inventory
from tests.integration.conftest import APP, DOMAINS, REPO, fab
from tests.outside import http_get, https_get, port_open


def test_bookworm_is_provisioned_like_trixie(bookworm):
    host = bookworm.host
    assert "VERSION_CODENAME=bookworm" in bookworm.root("cat /etc/os-release").stdout
    response = https_get(host.address, DOMAINS[0], host.acme_root)
    assert response.status == 200 and "ready for its first deploy" in response.body
    assert http_get(host.address, DOMAINS[0]).status == 301
    assert not port_open(host.address, 5432)
    assert "listen 443 ssl http2" in bookworm.root(f"cat /etc/nginx/sites-available/{APP}").stdout
    out = bookworm.provision().stdout
    assert re.search(r"recap \S+: \d+ steps, 0 changed", out), out


def test_bookworm_runs_the_example_app(bookworm, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(REPO / "example", project, ignore=shutil.ignore_patterns("__pycache__", "db.sqlite3"))
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "example"]):
        subprocess.run(["git", "-c", "user.name=T", "-c", "user.email=t@app.test", *args], cwd=project, check=True)
    inventory = tmp_path / "bookworm.yaml"
    write_inventory(bookworm.host, inventory, app=APP, domains=DOMAINS, source=project,
                             health_check="/healthz/")
    out = fab("deploy", "--inventory", str(inventory))
    release = re.search(r"deployed (\S+) to", out.stdout).group(1)
    answer = https_get(bookworm.host.address, DOMAINS[0], bookworm.host.acme_root, "/version/")
    assert answer.status == 200 and answer.body.strip() == f"1 {release}"
