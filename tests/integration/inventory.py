"""Gangway inventories for test hosts: what the integration fixtures (and bench/, demo) deploy with."""

from __future__ import annotations

import json
from pathlib import Path

from tests.testhost import TestHost


def write_inventory(host: TestHost, path: Path, app: str = "mysite", domains=(), database: dict | None = None,
                    layout: list[tuple[TestHost, tuple[str, ...]]] | None = None, top: dict | None = None,
                    **app_keys) -> Path:
    """Write a gangway inventory (YAML) for HOST at PATH: root with the harness key, pebble as the
    ACME directory (trusting its CA bundle), and the host's tinyproxy as the outbound proxy.
    APP_KEYS (source, health_check, keep_releases, ...) are added to its app section; DATABASE ({url, ca_bundle,
    password_env}) is its database section; TOP adds other top-level sections ({"deploy": {"batch": 2}}).
    LAYOUT lists several servers of one cluster with their roles instead of HOST alone (HOST gives the
    cluster's proxy and ACME CA).
    Host keys go to a fresh PATH.known_hosts next to it (known_hosts_path), never to ~/.ssh/known_hosts:
    test hosts reuse addresses with new keys."""
    q = json.dumps  # a JSON string is a valid YAML scalar
    email = f"admin@{domains[0] if domains else 'app.test'}"
    extra = "".join(f"  {key}: {q(str(value) if isinstance(value, Path) else value)}\n"
                    for key, value in app_keys.items())
    known_hosts = known_hosts_path(path)
    known_hosts.unlink(missing_ok=True)  # keys of an earlier host at this address
    hosts = "".join(f"  - address: {q(member.address)}\n    user: root\n    key: {q(str(member.ssh_key))}\n"
                    + (f"    roles: {q(list(roles))}\n" if roles else "")
                    for member, roles in (layout or [(host, ())]))
    Path(path).write_text(
        f"app:\n  name: {q(app)}\n  domains: [{', '.join(q(d) for d in domains)}]\n{extra}"
        f"hosts:\n{hosts}"
        f"known_hosts: {q(known_hosts.name)}\n"
        f"acme:\n  email: {q(email)}\n  directory: {q(host.acme_directory)}\n"
        f"  ca_bundle: {q(str(host.acme_ca_bundle))}\n"
        f"proxy:\n  url: {q(host.proxy_url)}\n  no_proxy: [{q(host.gateway)}]\n"
        + ("database:\n" + "".join(f"  {key}: {q(str(value))}\n" for key, value in database.items())
           if database else "")
        + "".join(f"{key}: {q(value)}\n" for key, value in (top or {}).items()))
    return Path(path)


def known_hosts_path(inventory: Path) -> Path:
    """The host keys file write_inventory names for the inventory at INVENTORY: NAME.known_hosts beside it."""
    return Path(inventory).with_suffix(".known_hosts")

