"""SSH hardening: keys only, no root login; applied only after the deploy user's key login is proven."""

from __future__ import annotations

from tasks.provisioning import Server
from tasks.render import render
from tasks.steps import File, Step

# sshd takes the first value it reads; drop-ins are read before the main file, in name order.
HARDENING = "/etc/ssh/sshd_config.d/00-gangway.conf"


def hardening(server: Server) -> Step:
    return Step("ssh hardening", [
        File(HARDENING, render("ssh/hardening.conf.j2", deploy_user=server.inventory.deploy_user)),
    ], before=server.prove_deploy_login, validate="mkdir -p /run/sshd && sshd -t",
        after=["systemctl reload ssh"], note="no root login, no passwords")
