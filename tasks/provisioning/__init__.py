"""`fab provision`'s steps, one module per subsystem, in the order they run.

Each module exposes functions that take the `Server` being provisioned and return `Step`s. The order
matters: packages before the services they bring, the deploy user's key login proven before SSH is hardened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..inventory import Host, Inventory
from ..layout import Layout
from ..facts.steps import Step


@dataclass(frozen=True)
class Server:
    """Everything the steps need to know about the server being provisioned."""
    inventory: Inventory
    host: Host
    public_keys: tuple[str, ...]
    # Opens a fresh SSH connection as the deploy user and proves sudo works; raises if it does not.
    prove_deploy_login: Callable[[], None]

    @property
    def layout(self) -> Layout:
        return Layout(self.inventory.app.name)



def steps(server: Server) -> list[Step]:
    from . import (backups, catch_all, firewall, gunicorn, hardening, jobs, media, nginx, postgres, processes, redis,
                   ssh, system, tls, users)

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
        users.app_user(server),
        users.build_user(server),
        users.directories(server),
        postgres.database(server),
        redis.service(server),
        *([media.store(server)] if server.inventory.media else []),
        redis.environment(server),
        backups.schedule(server),
        gunicorn.service(server),
        jobs.scheduled(server),
        processes.units(server),
        nginx.site(server),
        # With TLS: get the certificate through the HTTP site, then render the site again with HTTPS.
        *([*tls.certificate(server), nginx.site(server)] if server.inventory.tls else []),
        catch_all.unknown_hosts(server),
        firewall.rules(server),
        ssh.hardening(server),
    ]
