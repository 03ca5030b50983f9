"""`fab provision`: turn a fresh Debian server into a production home for a Django app."""

from __future__ import annotations

from invoke.exceptions import Exit

from . import dryrun
from .. import provisioning
from ..provisioning import postgres
from ..connection import targets
from ..inventory import Host, Inventory
from ..session.runner import apply
from ..session.run import Session, run_task




def in_order(c, inventory, what, provision_one, verbose, dry_run) -> None:
    """Several servers with a db host: the db host first, then its facts read back (`DatabaseLink`: address,
    CA, password) and the other hosts provisioned with them. If the db host fails or gives no link, the others
    are not provisioned: their database step would have nothing to connect to. Otherwise every host as given."""
    later: list[Host] = []  # the hosts that wait for the db host's link
    links: list[provisioning.DatabaseLink | None] = []

    def db_first(inv: Inventory, hosts: list[Host]) -> list[Host]:
        db = inv.db_host if inv.several_servers else None
        if db is None or db.address not in {host.address for host in hosts}:
            return hosts
        later.extend(host for host in hosts if host.address != db.address)
        return [host for host in hosts if host.address == db.address]

    def first(session: Session) -> str:
        counts = provision_one(session, None)
        if later:
            probe = postgres.link_probe(session.layout)
            links.append(session.remote.gather([probe])[probe.key])
        return counts

    try:
        run_task(c, inventory, what(db_first), first, verbose)
    except Exit as error:
        raise Exit(error.message + _waiting(later), code=error.code) from None
    if not later:
        return
    if not links or links[0] is None and not dry_run:
        raise Exit("provision failed: the db host gave no address, CA or password back" + _waiting(later), code=1)
    run_task(c, inventory, what(lambda inv, hosts: later), lambda session: provision_one(session, links[0]),
             verbose)


def _waiting(hosts: list[Host]) -> str:
    """What a failed db host means for the hosts that wait for it."""
    if not hosts:
        return ""
    return (f"\nThe other hosts ({', '.join(h.address for h in hosts)}) were not provisioned: their database step "
            "needs the db host's address, CA and password, read back from it once it is provisioned.")


def provision_host(session: Session, config=None, dry_run: bool = False,
                   database_link: provisioning.DatabaseLink | None = None) -> str:
    """Apply the steps (or only show them), print the recap and return its counts. `config` is the task's
    Fabric config: the proof of the deploy user's login is built from it like every other connection;
    `database_link`: the db host's facts, for the app hosts of several servers."""
    inventory, host, reporter, remote, stats = (session.inventory, session.host, session.reporter, session.remote,
                                                session.stats)
    keys = targets.public_keys(host, inventory)
    reporter.line(f"provision{' --dry-run' if dry_run else ''} {host.address} as {remote.user} ({inventory.source})")
    if not inventory.tls:
        reporter.line("  note: the inventory lists no domains, so the site is served over HTTP only; add "
                      "app.domains to get a certificate")
    server = provisioning.Server(inventory=inventory, host=host, public_keys=keys,
                                 prove_deploy_login=lambda: targets.prove_login(host, inventory, stats, config),
                                 database_link=database_link)
    recap = (dryrun.preview if dry_run else apply)(remote, provisioning.steps(server), reporter)
    counts = (f"{recap.steps} steps, {len(recap.changed)} {'would change' if dry_run else 'changed'}, "
              f"{len(recap.unchanged)} unchanged")
    reporter.line(f"recap {host.address}: {counts}; {stats.summary()}")
    return counts
