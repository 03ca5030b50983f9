"""Redis, when the inventory's `services` names it: Debian's redis-server on the loopback address with a
password made on the server, and the app's REDIS_URL and CELERY_BROKER_URL in its environment file.

Debian's package on both releases (Redis 7.0 on Debian 12, Redis 8.0 on Debian 13), its /etc/redis/redis.conf
untouched: gangway's settings (templates/redis/redis.conf.j2) and the password come in through a drop-in of
its unit. The password file is root's alone; systemd hands it to the service as a credential. After any
change Redis is restarted and read back: it must answer PING with the password, refuse a client without it,
and listen on the loopback address only, or the step fails.

Taken out of `services`, Redis is left installed and running with its data (gangway never deletes data);
the app's environment loses the two variables, and the step says how to remove the package.
"""

from __future__ import annotations

from . import Server
from .. import defaults
from ..layout import REDIS_CONFIG, REDIS_DATA, REDIS_DROP_IN, REDIS_SECRET, REDIS_UNIT
from ..commands import release as commands
from ..commands.database import db_address
from ..commands.render import render
from ..commands.services import REDIS, SERVICE_VARIABLES, env_services, env_state, new_password, ping
from ..commands.shell import join, parse_reports, q
from ..facts.steps import Change, Check, Directory, Facts, File, Packages, Probe, Step
from ..project.django import managed_environment

PACKAGES_KEY = "packages:redis"


def config_file() -> str:
    return render("redis/redis.conf.j2", host=defaults.REDIS_HOST, port=defaults.REDIS_PORT, data=REDIS_DATA)


def drop_in_file() -> str:
    return render("systemd/redis-server.conf.j2", config=REDIS_CONFIG, secret=REDIS_SECRET)


def parse_report(out: str, rc: int) -> dict | None:
    """A program's report line; None when it failed or printed none (could not be read: never "fine")."""
    found = parse_reports(out)
    return found if rc == 0 and found else None


def secret_probe() -> Probe:
    return Probe("redis_secret", f"if [ -s {q(REDIS_SECRET)} ]; then stat -c '%a %U %G' {q(REDIS_SECRET)}; "
                                 "else echo absent; fi", lambda out, rc: out.strip() if rc == 0 else None)


def secret_changes(state: str | None, facts: Facts) -> list[Change]:
    if state == "600 root root":
        return []
    if state in (None, "absent"):
        return [Change(f"password made on the server in {REDIS_SECRET} (root's alone)", (new_password(),))]
    return [Change(f"{REDIS_SECRET} made root's alone (was {state})",
                   (join("chown", "root:root", REDIS_SECRET), join("chmod", "600", REDIS_SECRET)))]


def ping_probe(server: Server) -> Probe:
    """Whether redis-server is enabled, and Redis as the app sees it (services.ping)."""
    return Probe("redis_ping", f"echo \"enabled=$(systemctl is-enabled {REDIS_UNIT} 2>/dev/null)\"\n"
                               + ping(server.layout), parse_ping)


def parse_ping(out: str, rc: int) -> dict | None:
    found = parse_report(out, rc)
    if found is None:
        return None
    return {**found, "enabled": "enabled=enabled" in out.splitlines()[:1]}


def serving(found: dict | None) -> bool:
    """Redis is enabled, answers the password, refuses a client without it, and listens on loopback only."""
    return bool(found) and found["enabled"] and found["answer"] == "PONG" \
        and found["anonymous"].startswith("NOAUTH") and set(found["listening"] or ()) <= {"127.0.0.1", "::1"}


def service_changes(found: dict | None, facts: Facts) -> list[Change]:
    return [] if serving(found) else [Change(f"{REDIS_UNIT} enabled and restarted", ())]  # `after` does it


def installed_note(facts: Facts) -> str:
    if defaults.REDIS_PACKAGE in (facts.get(PACKAGES_KEY) or ()):
        return (f"not in the inventory's services; {defaults.REDIS_PACKAGE} is still installed, with its data in "
                f"{REDIS_DATA} (gangway never removes data): `sudo apt-get purge {defaults.REDIS_PACKAGE}` "
                "removes it")
    return "not in the inventory's services"


def service(server: Server) -> Step:
    """redis-server installed, configured, protected by a password and answering; or, when the inventory does
    not ask for it, a note saying whether it is still installed."""
    installed = Packages([defaults.REDIS_PACKAGE], env=server.inventory.proxy_environment, key=PACKAGES_KEY)
    if REDIS not in server.inventory.services:
        return Step("redis", [Check(installed.probes()[0], lambda found, facts: [])], note=installed_note)
    return Step("redis", [
        installed,
        Check(secret_probe(), secret_changes),
        Directory(REDIS_DROP_IN.rsplit("/", 1)[0]),
        File(REDIS_CONFIG, config_file()),
        File(REDIS_DROP_IN, drop_in_file()),
        Check(ping_probe(server), service_changes),
    ], after=["systemctl daemon-reload", join("systemctl", "enable", "--quiet", REDIS_UNIT),
              join("systemctl", "restart", REDIS_UNIT), ping(server.layout, require=True)],
        note=f"{REDIS_UNIT} on {defaults.REDIS_HOST}:{defaults.REDIS_PORT}, answers the password, refuses a "
             f"client without it; append-only file in {REDIS_DATA}",
        changed_note="read back after the restart: answers PING with the password, refuses a client without "
                     f"it, listens on {defaults.REDIS_HOST} only",
        hint=f"See why with `sudo journalctl -u {REDIS_UNIT} -n 50` on the server.")


def environment_probe(server: Server) -> Probe:
    """Which of the services' variables a rewrite of the app's shared/env would change (names only)."""
    return Probe("env_services", env_state(server.layout, server.inventory), parse_report)


def environment(server: Server) -> Step:
    """The services' variables in the app's shared/env when it exists already, so no deploy is needed for
    `fab manage`, jobs and the next release to get them (the first deploy writes the file). Only a difference
    in them makes a change; the file is then written as a deploy would write it."""
    inventory, layout = server.inventory, server.layout
    write = commands.env_file(layout, managed_environment(inventory.app, server.host.address, inventory.database,
                                                          db_address(inventory), inventory.media),
                              services=env_services(inventory), if_exists=True)

    def decide(found: dict | None, facts: Facts) -> list[Change]:
        if found is None:  # could not be read: write it (a failure then says why)
            return [Change(f"{layout.env_file}: the services' variables brought up to date (their state could not "
                           "be read first)", (write,))]
        changed = sorted(set(found["changed"]) & set(SERVICE_VARIABLES))
        if not changed:
            return []
        verb = "written" if env_services(inventory) else "removed"
        return [Change(f"{layout.env_file}: {', '.join(changed)} {verb} (`fab manage`, jobs and the next deploy "
                       "get this; the running web release keeps the environment it started with until the next "
                       "deploy)", (write,))]

    def note(facts: Facts) -> str:
        found = facts.get("env_services")
        if found is not None and not found["exists"]:
            return f"{layout.env_file} does not exist yet: the first deploy writes it"
        names = ", ".join(SERVICE_VARIABLES)
        return (f"{names} in {layout.env_file}" if env_services(inventory)
                else f"no service variables in {layout.env_file}")

    return Step("app environment (services)", [Check(environment_probe(server), decide)], note=note)
