"""uv, which builds the releases' Python environments: installed from PyPI (Debian has no package of it) into a
root-owned tool venv, through the inventory's proxy as pip would be, and its cache, the build user's, kept across
releases. A deploy reads uv's version in its first round trip and refuses, naming `fab provision`, on a server
provisioned before gangway used uv."""

from __future__ import annotations

import re

from .. import defaults
from ..commands.shell import join, with_env
from ..facts.steps import Change, Check, Directory, Probe, Step
from ..layout import CACHE_ROOT, UV, UV_HOME
from . import Server


def parse_version(out: str, rc: int) -> tuple[int, ...] | None:
    """`uv --version` ("uv 0.13.9 (x86_64-unknown-linux-gnu)") -> (0, 13, 9); None: no uv that runs."""
    match = re.match(r"uv (\d+(?:\.\d+)*)", out.strip()) if rc == 0 else None
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


PROBE = Probe("uv", f"{join(UV, '--version')} 2>/dev/null", parse_version)


def wanted(version: tuple[int, ...] | None) -> bool:
    least, below = defaults.UV_VERSIONS
    return version is not None and least <= version < below


def shown(version: tuple[int, ...] | None) -> str:
    return ".".join(map(str, version)) if version else "none"


def refusal(version: tuple[int, ...] | None) -> str:
    """Why a deploy cannot build on this server ("" when it can): its uv is missing or not the wanted one."""
    if wanted(version):
        return ""
    found = f"uv {shown(version)}" if version else "no uv"
    return (f"the server has {found} in {UV_HOME} and gangway builds Python environments with {defaults.UV} "
            "(the server was provisioned by an older gangway): run `fab provision` once, then deploy again")


def _install(server: Server):
    def decide(version: tuple[int, ...] | None, facts) -> list[Change]:
        if wanted(version):
            return []
        pip = join(f"{UV_HOME}/bin/pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
                   "--upgrade", defaults.UV)
        return [Change(f"uv {shown(version)} -> {defaults.UV} from PyPI, in {UV_HOME}", (
            # A fresh venv each time: one made by an older Python (before a Debian upgrade) would not run.
            join("python3", "-m", "venv", "--clear", UV_HOME),
            with_env(server.inventory.proxy_environment, pip),
            f"{join(UV, '--version')} >/dev/null",
        ))]
    return decide


def installed(server: Server) -> Step:
    layout = server.layout
    builder = layout.build_user
    return Step("uv", [
        Check(PROBE, _install(server)),
        Directory(CACHE_ROOT, "755"),
        Directory(layout.cache, "755"),
        Directory(layout.uv_cache, "700", builder, builder),
    ], note=lambda facts: f"uv {shown(facts[PROBE.key])} in {UV_HOME}; its cache {layout.uv_cache}, {builder}'s")
