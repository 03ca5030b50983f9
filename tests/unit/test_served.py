"""What a provision rendered into the Gunicorn unit and the nginx site, against what it would render now: the
inventory keys only a provision carries are named when they changed."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
from pathlib import Path

import pytest

from tasks.inventory import App, Host, Inventory
from tasks.layout import Layout
from tasks.provisioning import served
from tests.unit.test_release_commands import HOSTILE

HOST = (Host("10.0.0.2"),)


def inventory(**app) -> Inventory:
    return Inventory(dataclasses.replace(App("mysite", domains=("app.test",)), **app), HOST)


def test_the_same_inventory_has_no_drift_with_or_without_a_certificate_yet():
    inv = inventory()
    assert served.drift(inv, served.as_provisioned(inv)) == []
    http_only = served.as_provisioned(inv)
    site = served.files(inv)[2]
    http_text = site.variants[-1]  # rendered before the certificate existed, by an older nginx
    http_only[site.path] = {"sha256": served._sha(http_text), "lines": []}
    assert served.drift(inv, http_only) == []


def test_a_changed_wsgi_module_is_named_with_the_unit_and_fab_provision():
    before = served.as_provisioned(inventory())
    differ = served.drift(inventory(wsgi_module="other.wsgi"), before)
    assert [(d.name, d.keys) for d in differ] == [("Gunicorn unit", ("app.wsgi_module",))]
    text = served.refusal(inventory(), differ)
    assert "the inventory's `app.wsgi_module` changed since the last `fab provision`" in text
    assert "Run `fab provision`, then deploy" in text and "/etc/systemd/system/mysite@.service" in text


def test_upload_size_and_domains_are_named_in_the_nginx_site():
    before = served.as_provisioned(inventory())
    differ = served.drift(inventory(max_upload_mb=77), before)
    assert [(d.name, d.keys) for d in differ] == [("nginx site", ("app.max_upload_mb",))]
    differ = served.drift(inventory(domains=("app.test", "www.app.test")), before)
    assert [(d.name, d.keys) for d in differ] == [("nginx site", ("app.domains",))]


def test_a_file_that_differs_elsewhere_or_is_missing_is_named_without_a_key():
    inv = inventory()
    found = served.as_provisioned(inv)
    found[Layout("mysite").gunicorn_conf] = {"sha256": "0" * 64, "lines": []}
    found[Layout("mysite").nginx_site] = None
    differ = served.drift(inv, found)
    assert [(d.name, d.keys) for d in differ] == [("Gunicorn config", ()), ("nginx site", ())]
    assert "differs from what `fab provision` writes now" in served.refusal(inv, differ)


def test_an_unreadable_answer_is_no_drift():
    assert served.drift(inventory(), None) == []


def test_the_probe_reads_hashes_and_the_key_lines(tmp_path):
    inv = inventory()
    layout = Layout("mysite")
    command = served.probe(layout).command
    for item in served.files(inv):
        local = tmp_path / item.path.strip("/").replace("/", "_")
        local.write_text(item.variants[0])
        command = command.replace(item.path, str(local))
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    found = served.probe(layout).parse(out.stdout, out.returncode)
    assert found is not None, out.stderr
    remapped = {item.path: found[str(tmp_path / item.path.strip("/").replace("/", "_"))]
                for item in served.files(inv)}
    assert remapped == served.as_provisioned(inv)
    assert any("mysite.wsgi:application" in line for line in remapped[layout.unit_path]["lines"])


@pytest.mark.parametrize("value", HOSTILE)
def test_the_probe_reads_hostile_paths_as_data_as_a_gather_runs_it(tmp_path, value):
    class Local(Layout):
        @property
        def unit_path(self) -> str:
            return str(tmp_path / value / "unit")

        @property
        def gunicorn_conf(self) -> str:
            return str(tmp_path / value / "absent.conf")

        @property
        def nginx_site(self) -> str:
            return str(tmp_path / value / "site")

    layout = Local("mysite")
    (tmp_path / value).mkdir()
    Path(layout.unit_path).write_text("[Service]\nExecStart=/srv/gunicorn mysite.wsgi:application\n")
    Path(layout.nginx_site).write_text("server {\n    server_name app.test;\n    client_max_body_size 10m;\n}\n")
    command = served.probe(layout).command
    out = subprocess.run(["sh", "-c", f"( {command} ) </dev/null"], cwd=tmp_path, capture_output=True, text=True)
    found = served.last_json(out.stdout, out.returncode)
    assert found is not None and not (tmp_path / "CANARY").exists(), out.stderr
    assert found[layout.unit_path]["lines"] == ["ExecStart=/srv/gunicorn mysite.wsgi:application"]
    assert found[layout.unit_path]["sha256"] == hashlib.sha256(Path(layout.unit_path).read_bytes()).hexdigest()
    assert found[layout.gunicorn_conf] is None
    assert found[layout.nginx_site]["lines"] == ["server_name app.test;", "client_max_body_size 10m;"]
