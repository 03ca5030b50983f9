"""The files `fab provision` renders from the inventory that a release is started and served with: the Gunicorn
unit (`app.wsgi_module`, or `app.asgi_module` with `app.server: asgi`), its config (`app.server`: the worker
class; `app.workers`, `app.standby_minutes` (on or off) and `app.processes`: what the worker count is sized
with), and the nginx site (`app.domains`, `app.max_upload_mb`, `app.server`: websocket upgrades). A deploy reads
their hashes in its first round trip and compares them with what provision would write now, the way
`jobs.drift` does for scheduled jobs: a change only a provision carries makes the deploy refuse before it
builds, naming the key and `fab provision`, instead of a release failing on the old unit."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..inventory import Host, Inventory
from ..layout import Layout
from ..commands import programs
from ..commands.shell import join
from ..facts.steps import Probe, last_json
from . import Server


# The lines each inventory key lands in.
WSGI = r"^ExecStart="
WORKER_CLASS = r"^worker_class\b"
SIZING = {"app.workers": r"^WORKERS\b", "app.standby_minutes": r"^STANDBY\b", "app.processes": r"^PROCESSES\b"}
DOMAINS = r"^\s*server_name\b"
UPLOAD = r"^\s*client_max_body_size\b"
UPGRADE = r"^\s*(?:proxy_http_version|proxy_set_header (?:Upgrade|Connection))\b"


@dataclass(frozen=True)
class Served:
    name: str          # what the message calls it
    path: str
    variants: tuple[str, ...]  # what provision may have written (the nginx site: with or without TLS, http2)
    keys: tuple[tuple[str, str], ...]  # (inventory key, regex of the lines it lands in)


def _server(inventory: Inventory, host: Host | None) -> Server:
    return Server(inventory, host or (inventory.hosts[0] if inventory.hosts else None), (), lambda: None)


def files(inventory: Inventory, host: Host | None = None) -> list[Served]:
    """What provision writes on `host` (default: the first), whose nginx site depends on its place in the layout."""
    from . import gunicorn, nginx
    server, layout = _server(inventory, host), Layout(inventory.app.name)
    tls_options = (True, False) if inventory.tls else (False,)  # HTTP only until a certificate exists
    sites = tuple(dict.fromkeys(nginx.site_config(server, tls, version) for tls in tls_options
                                for version in ((1, 25, 1), (1, 22, 0))))
    module = "app.asgi_module" if inventory.app.server == "asgi" else "app.wsgi_module"
    return [Served("Gunicorn unit", layout.unit_path, (gunicorn.unit_file(server),), ((module, WSGI),)),
            Served("Gunicorn config", layout.gunicorn_conf, (gunicorn.config_file(server),),
                   (("app.server", WORKER_CLASS), *SIZING.items())),
            Served("nginx site", layout.nginx_site, sites,
                   (("app.domains", DOMAINS), ("app.max_upload_mb", UPLOAD), ("app.server", UPGRADE)))]


def _pattern(item: Served) -> str:
    return "|".join(f"(?:{regex})" for _, regex in item.keys)


def probe(layout: Layout) -> Probe:
    """The served files as the server has them: their hashes and the lines the inventory's keys land in
    (templates/programs/served_files.py)."""
    conf = "|".join(f"(?:{regex})" for regex in (WORKER_CLASS, *SIZING.values()))
    paths = [(layout.unit_path, WSGI), (layout.gunicorn_conf, conf),
             (layout.nginx_site, f"(?:{DOMAINS})|(?:{UPLOAD})|(?:{UPGRADE})")]
    command = programs.fed(join("python3", "-B", "-c", programs.BOOTSTRAP), "served_files.py",
                           {"files": [list(p) for p in paths]})
    return Probe("served_files", command, last_json)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def as_provisioned(inventory: Inventory, host: Host | None = None) -> dict:
    """What the probe answers on a server provisioned with `inventory` (first variant of each file)."""
    found = {}
    for item in files(inventory, host):
        text = item.variants[0]
        found[item.path] = {"sha256": _sha(text), "lines": [line.strip() for line in text.splitlines()
                                                            if item.keys and re.search(_pattern(item), line)]}
    return found


@dataclass(frozen=True)
class Drift:
    name: str
    path: str
    keys: tuple[str, ...]  # the inventory keys whose lines differ; empty: something else differs


def drift(inventory: Inventory, on_server: dict | None, host: Host | None = None) -> list[Drift]:
    """The served files a provision would rewrite now on `host`, with the inventory keys that changed in each.
    Unknown (the probe could not run) is no drift: the deploy goes on as before."""
    if not on_server:
        return []
    found = []
    for item in files(inventory, host):
        there = on_server.get(item.path)
        if there and there.get("sha256") in {_sha(text) for text in item.variants}:
            continue
        keys = []
        for key, regex in item.keys:
            theirs = sorted(line for line in (there or {}).get("lines", []) if re.search(regex, line))
            if not theirs and regex in SIZING.values():
                continue  # always written: a file without it was written by an older gangway, not another value
            if not any(theirs == sorted(line.strip() for line in text.splitlines() if re.search(regex, line))
                       for text in item.variants):
                keys.append(key)
        found.append(Drift(item.name, item.path, tuple(keys) if there else ()))
    return found


def refusal(inventory: Inventory, differ: list[Drift]) -> str:
    """The deploy's refusal: which inventory keys changed since the last provision, or which files differ."""
    keys = list(dict.fromkeys(key for d in differ for key in d.keys))
    where = ", ".join(f"the {d.name} ({d.path})" for d in differ)
    if keys:
        named = " and ".join(f"`{key}`" for key in keys)
        return (f"the inventory's {named} changed since the last `fab provision`: {where} on the server still "
                f"has the old value, and a release would start with it. Run `fab provision`, then deploy")
    return (f"{where} on the server differs from what `fab provision` writes now (a newer gangway, or an edit "
            f"on the server), and a release would start with it. Run `fab provision`, then deploy")
