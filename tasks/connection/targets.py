"""Which servers a task acts on, and how to log in to them.

The inventory comes from `--inventory NAME` (NAME.yaml in the inventory directory, or a path), else Fabric's
config key `gangway.inventory` (fabric.yaml, or the FABRIC_GANGWAY_INVENTORY environment variable), else
production.yaml when it exists. The inventory directory is the config key `gangway.inventory_dir`: the
project's fabfile sets it (`deploy/` beside the fabfile, see `collection.py`; `inventory/` in this repository).
`fab -H user@host[:port]` overrides the inventory's hosts, and works without any inventory file (defaults,
HTTP only).

Connections are built by Fabric from the task's config, so ~/.ssh/config (Host aliases, User, Port,
IdentityFile) and fabric.yaml's connect_kwargs apply; the inventory's explicit values win. Host keys are checked
against the inventory's `known_hosts` file, else Fabric's config key `gangway.known_hosts`
(FABRIC_GANGWAY_KNOWN_HOSTS), else ~/.ssh/known_hosts (and ssh_config's UserKnownHostsFile).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import paramiko
from fabric import Connection

from ..inventory import INVENTORY_DIR, Host, Inventory, InventoryError, check_public_key, for_host, load
from .remote import Remote, RemoteError, Stats, echo_line, key_file_problem, open_connection, say

DEFAULT_INVENTORY = "production"
DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


def select(c, inventory_name: str | None) -> tuple[Inventory, list[Host]]:
    """The inventory and the hosts for this invocation of a task: `fab -H`'s host, else the inventory's."""
    inventory, hosts = _select(c, inventory_name)
    configured = (c.config.get("gangway") or {}).get("known_hosts")
    if configured and inventory.known_hosts is None:
        inventory = dataclasses.replace(inventory, known_hosts=Path(configured).expanduser())
    return inventory, hosts


def inventory_dir(c) -> Path:
    """Where inventory files live: the config key `gangway.inventory_dir`, else this repository's inventory/."""
    configured = (c.config.get("gangway") or {}).get("inventory_dir")
    return Path(configured) if configured else INVENTORY_DIR


def _select(c, inventory_name: str | None) -> tuple[Inventory, list[Host]]:
    name = inventory_name or (c.config.get("gangway") or {}).get("inventory")
    directory = inventory_dir(c)
    cli = c if isinstance(c, Connection) else None
    if name:
        inventory = load(name, directory)
    elif (directory / f"{DEFAULT_INVENTORY}.yaml").is_file():
        inventory = load(DEFAULT_INVENTORY, directory)
    elif cli:
        inventory = None
    else:
        raise InventoryError(f"no inventory: {directory / DEFAULT_INVENTORY}.yaml does not exist. Run `fab init` in "
                             "your project to write one (or copy inventory/example.yaml), pass --inventory NAME, "
                             "or name a server: fab -H root@203.0.113.10 provision")
    if cli:
        keys = cli.connect_kwargs.get("key_filename") or []
        keys = [keys] if isinstance(keys, str) else keys
        key = Path(keys[0]).expanduser() if keys else (inventory.hosts[0].key if inventory and inventory.hosts
                                                        else None)
        host = Host(address=cli.host, user=cli.user, port=cli.port or 22, key=key)
        # A server of the inventory's layout keeps its roles and private address when -H names it.
        listed = next((h for h in inventory.hosts if h.address == host.address.lower()), None) if inventory else None
        if listed:
            host = dataclasses.replace(listed, user=host.user, port=host.port, key=host.key)
        return (inventory or for_host(host)), [host]
    if not inventory.hosts:
        raise InventoryError(f"{inventory.source}: hosts is empty; add a server (address, user, key), "
                             "or name one with fab -H")
    return inventory, list(inventory.hosts)


def app_hosts(inventory: Inventory, hosts: list[Host]) -> list[Host]:
    """Of the selected hosts, those that run the app's code (web or worker): a deploy's, a rollback's."""
    return [host for host in hosts if host.has("web") or host.has("worker")]


def one_app_host(inventory: Inventory, hosts: list[Host]) -> list[Host]:
    """The first selected app host: a one-off command (`fab manage`, `fab import-data`) acts on the one
    database every app host shares, once."""
    return app_hosts(inventory, hosts)[:1]


def verbose(config) -> bool:
    """Whether every remote command is printed as it runs: Fabric's config key `gangway.verbose` (fabric.yaml,
    FABRIC_GANGWAY_VERBOSE=1), which a task's -v flag sets too."""
    value = ((config.get("gangway") or {}) if config is not None else {}).get("verbose")
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def set_verbose(c, flag: bool) -> None:
    """A task's -v flag: the same as gangway.verbose for every connection this task opens."""
    if flag:
        c.config.gangway = {**(c.config.get("gangway") or {}), "verbose": True}


def login(host: Host, inventory: Inventory, stats: Stats, config=None) -> Remote:
    """Log in as the deploy user if it exists yet (root login is off after provisioning), else as host.user.
    `config` is the task's Fabric config (c.config): ssh_config and connect_kwargs come from it, and with
    gangway.verbose every remote command is printed as it runs."""
    users = [inventory.deploy_user] + ([host.user] if host.user != inventory.deploy_user else [])
    echo = say if verbose(config) else None
    for user in users:
        try:
            return Remote(open_connection(host, user, stats, config=config, known_hosts=inventory.known_hosts),
                          stats, echo=echo)
        except paramiko.AuthenticationException:
            continue
    key = f"the key {host.key}" if host.key else "your SSH keys (~/.ssh/id_*, the SSH agent)"
    raise RemoteError(f"{host.address} refused {key} for {' and '.join(users)}. Check hosts[].user and "
                      "hosts[].key in the inventory (or fab -H user@host -i KEY)")


def prove_login(host: Host, inventory: Inventory, stats: Stats, config=None) -> None:
    """A fresh connection as the deploy user that can use sudo: proof before closing other ways in. It checks
    the server's host key like every other connection."""
    user = inventory.deploy_user
    try:
        connection = open_connection(host, user, stats, config=config, known_hosts=inventory.known_hosts)
    except paramiko.AuthenticationException:
        raise RemoteError(f"{user}@{host.address} cannot log in with your key; nothing was locked down") from None
    try:
        stats.commands += 1
        if verbose(config):
            say(echo_line(connection.host, "sudo -n true"))
        if not connection.run("sudo -n true", hide=True, warn=True, in_stream=False).ok:
            raise RemoteError(f"{user}@{host.address} logs in but cannot use sudo; nothing was locked down")
    finally:
        connection.close()


def public_keys(host: Host, inventory: Inventory) -> tuple[str, ...]:
    """The operator's public key (from the key file in use) plus the inventory's ssh_keys."""
    candidates = [host.key] if host.key else [Path.home() / ".ssh" / n for n in DEFAULT_KEYS]
    keys = []
    for path in candidates:
        if path is None or not path.is_file():
            continue
        pub = Path(f"{path}.pub")
        if problem := key_file_problem(path, agent=False):
            if "passphrase" not in problem or not pub.is_file():
                raise InventoryError(problem + ("" if "passphrase" not in problem else
                                                f"; or put its public half next to it as {pub.name}"))
        if pub.is_file():
            line = pub.read_text().strip()
            if problem := check_public_key(line):  # it goes into authorized_keys: one plain key line only
                raise InventoryError(f"{pub}: {problem}; regenerate it with `ssh-keygen -y -f {path} > {pub}`")
            keys.append(line)
        else:
            try:
                pkey = paramiko.PKey.from_path(path)
            except (paramiko.SSHException, OSError, ValueError, TypeError) as error:
                raise InventoryError(f"{path}: cannot read the public half of this key ({error}); put it "
                                     f"next to it as {pub.name}") from None
            keys.append(f"{pkey.get_name()} {pkey.get_base64()}")
        break
    keys += [k for k in inventory.ssh_keys if k not in keys]
    if not keys:
        raise InventoryError("no SSH key to let the deploy user log in with: set hosts[].key in the inventory, "
                             "pass -i KEY, or create one with `ssh-keygen -t ed25519`")
    return tuple(keys)
