"""uv on the server: the provision step installs the wanted version only when it is not there (from PyPI, through
the inventory's proxy), makes the build user's cache, and a deploy refuses a server without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks import defaults, provisioning
from tasks.facts.steps import PathState
from tasks.inventory import parse
from tasks.layout import CACHE_ROOT, UV, UV_HOME
from tasks.provisioning import uv
from tests.unit.shellcheck import assert_shellcheck_clean

PROXY = "http://user:p%40w@proxy.internal:3128"


def server(**top):
    inv = parse({"app": {"name": "mysite"}, "hosts": [{"address": "10.0.0.2"}], **top},
                "inventory/production.yaml", Path("."))
    return provisioning.Server(inv, inv.hosts[0], ("ssh-ed25519 AAAA me",), lambda: None)


def facts(version, cache_owner="mysite_build"):
    layout = server().layout
    directory = PathState("directory", "755", "root", "root")
    return {"uv": version, f"path:{CACHE_ROOT}": directory, f"path:{layout.cache}": directory,
            f"path:{layout.uv_cache}": PathState("directory", "700", cache_owner, cache_owner)}


@pytest.mark.parametrize("said, version", [("uv 0.13.9 (x86_64-unknown-linux-gnu)", (0, 13, 9)),
                                           ("uv 0.13.0", (0, 13, 0))])
def test_the_version_is_read_from_uv_itself(said, version):
    assert uv.parse_version(said + "\n", 0) == version
    assert uv.parse_version("", 127) is None and uv.parse_version("sh: 1: uv: not found", 0) is None


def test_the_wanted_version_there_is_left_alone():
    step = uv.installed(server())
    plan = step.plan(facts((0, 13, 9)))
    assert plan.script is None
    assert plan.note == f"uv 0.13.9 in {UV_HOME}; its cache /var/cache/gangway/mysite/uv, mysite_build's"
    assert step.plan(facts((0, 13, 9), cache_owner="root")).script is not None  # the cache must be the builder's


@pytest.mark.parametrize("version", [None, (0, 12, 3), (0, 14, 0), (1, 0)])
def test_a_missing_or_other_uv_is_installed_from_pypi_through_the_proxy(version):
    step = uv.installed(server(proxy={"url": PROXY}))
    plan = step.plan(facts(version))
    (change,) = plan.changes
    assert change.what.endswith(f"-> {defaults.UV} from PyPI, in {UV_HOME}")
    assert f"python3 -m venv --clear {UV_HOME}" in plan.script
    assert f"{UV_HOME}/bin/pip install" in plan.script and defaults.UV in plan.script
    assert "https_proxy=" in plan.script and f"{UV} --version" in plan.script
    assert_shellcheck_clean(plan.script)
    assert uv.refusal(version).endswith("(the server was provisioned by an older gangway): run `fab provision` "
                                        "once, then deploy again")


def test_only_the_app_servers_get_uv():
    inv = {"app": {"name": "mysite"}, "hosts": [{"address": "10.0.0.2", "roles": ["web"]},
                                                 {"address": "10.0.0.3", "roles": ["db"]}]}
    parsed = parse(inv, "inventory/production.yaml", Path("."))
    titles = [[s.title for s in provisioning.steps(provisioning.Server(parsed, host, (), lambda: None))]
              for host in parsed.hosts]
    assert "uv" in titles[0] and "uv" not in titles[1]
    assert uv.refusal((0, 13, 9)) == ""
