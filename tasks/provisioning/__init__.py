"""`fab provision`'s steps, one module per subsystem, in the order they run.

Each module exposes functions that take the `Server` being provisioned and return `Step`s. The order
matters: packages before the services they bring, the deploy user's key login proven before SSH is hardened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..inventory import Host, Inventory
from ..layout import Layout
from ..facts.steps import Step


@dataclass(frozen=True)
class DatabaseLink:
    """What the app hosts of several servers need of the db host, read back from it after its provision: the
    address PostgreSQL listens on, the certificate of the CA gangway made there, the app role's password. It
    travels to the app hosts as file contents, never on a command line or in a log."""
    address: str
    ca_pem: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Server:
    """Everything the steps need to know about the server being provisioned."""
    inventory: Inventory
    host: Host
    public_keys: tuple[str, ...]
    # Opens a fresh SSH connection as the deploy user and proves sudo works; raises if it does not.
    prove_deploy_login: Callable[[], None]
    # The db host's facts, for an app host of several servers (None elsewhere, and on the db host itself).
    database_link: DatabaseLink | None = None

    @property
    def layout(self) -> Layout:
        return Layout(self.inventory.app.name)

    @property
    def roles(self) -> tuple[str, ...]:
        """What this server does in the inventory's layout (all of a single server's work when it has none)."""
        return self.inventory.roles_of(self.host)

    def has(self, role: str) -> bool:
        return role in self.roles

    @property
    def runs_app(self) -> bool:
        """Whether the app's code runs here (web or worker): its users, releases and units."""
        return self.has("web") or self.has("worker")

    @property
    def keeps_backups(self) -> bool:
        """Whether the daily backup runs here: on a single server, or the backup host of several
        (Inventory.backup_host)."""
        if not self.inventory.several_servers:
            return self.runs_app
        return self.inventory.backup_host.address == self.host.address


def steps(server: Server) -> list[Step]:
    """The steps for this server's roles, in order. A single server gets every one of them, as always."""
    from . import (backups, catch_all, firewall, gunicorn, hardening, jobs, media, nginx, postgres, processes, redis,
                   ssh, system, tls, users, uv)

    app, web, lb = server.runs_app, server.has("web"), server.has("lb")
    certificate = server.inventory.terminates_tls(server.host)
    return [
        system.apt_proxy(server),
        system.hostname(server),
        system.packages(server),
        system.security_updates(server),
        system.time_sync(server),
        system.swap(server),
        hardening.kernel(server),
        hardening.login_limits(server),
        hardening.packages(server),
        hardening.login_guard(server),
        users.deploy_user(server),
        *([users.app_user(server), users.build_user(server)] if app else []),
        users.directories(server),
        *([uv.installed(server)] if app else []),
        *(postgres.steps(server) if app or server.has("db") else []),
        *([redis.service(server), *([media.store(server)] if server.inventory.media else []),
           redis.environment(server)] if app else []),
        *([backups.schedule(server)] if server.keeps_backups else []),
        *([gunicorn.service(server), jobs.scheduled(server), processes.units(server)] if app else []),
        *([nginx.site(server),
           # With TLS: get the certificate through the HTTP site, then render the site again with HTTPS. With a
           # load balancer, it holds the certificate and the web hosts serve it over the private network.
           *([*tls.certificate(server), nginx.site(server)] if certificate else []),
           catch_all.unknown_hosts(server)] if web or lb else []),
        firewall.rules(server),
        ssh.hardening(server),
    ]
