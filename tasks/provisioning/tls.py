"""TLS: a certificate from the ACME CA (HTTP-01 through nginx), renewed by certbot's timer, nginx reloaded.

Let's Encrypt by default; the inventory may name another directory (staging, a private CA) and a CA bundle
the client must trust to talk to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..layout import ACME_WEBROOT
from . import Server
from ..commands.render import render
from ..commands.shell import join, q, with_env
from ..facts.steps import Absent, Change, Check, Directory, Facts, File, Probe, Step

RENEWAL_DROPIN = "/etc/systemd/system/certbot.service.d/gangway.conf"


@dataclass(frozen=True)
class CertificateState:
    domains: frozenset[str]
    not_after: str
    fresh: bool  # more than a day left
    server: str | None


def parse_certificate(out: str, rc: int) -> CertificateState | None:
    if rc != 0:
        return None
    not_after = re.search(r"notAfter=(.+)", out)
    server = re.search(r"^server\s*=\s*(\S+)", out, re.M)
    return CertificateState(domains=frozenset(re.findall(r"DNS:([^,\s]+)", out)),
                            not_after=not_after.group(1).strip() if not_after else "?",
                            fresh="state=fresh" in out,
                            server=server.group(1) if server else None)


def certificate_probe(server: Server) -> Probe:
    app = server.inventory.app.name
    cert = q(f"{server.layout.certificate_dir}/cert.pem")
    command = (f"[ -f {cert} ] || exit 1; openssl x509 -in {cert} -noout -enddate -ext subjectAltName; "
               f"if openssl x509 -in {cert} -noout -checkend 86400 >/dev/null; then echo state=fresh; fi; "
               f"grep -E '^server *=' {q(f'/etc/letsencrypt/renewal/{app}.conf')} || true")
    return Probe(f"certificate:{app}", command, parse_certificate)


def certbot_command(server: Server, force: bool) -> str:
    inv = server.inventory
    args = ["certbot", "certonly", "--non-interactive", "--agree-tos", "--no-eff-email",
            "--webroot", "--webroot-path", ACME_WEBROOT, "--cert-name", inv.app.name,
            "--server", inv.acme.directory, "--deploy-hook", "systemctl reload nginx"]
    args += ["--email", inv.acme.email] if inv.acme.email else ["--register-unsafely-without-email"]
    for domain in inv.app.domains:
        args += ["--domain", domain]
    if force:
        args.append("--force-renewal")
    return with_env(client_environment(server), join(*args))


def client_environment(server: Server) -> dict[str, str]:
    """What certbot needs in its environment, both now and when its timer renews."""
    env = dict(server.inventory.proxy_environment)
    if server.inventory.acme.ca_bundle:
        env["REQUESTS_CA_BUNDLE"] = server.layout.acme_ca_bundle
    return env


def certificate_changes(server: Server):
    wanted = frozenset(server.inventory.app.domains)
    directory = server.inventory.acme.directory

    def decide(state: CertificateState | None, facts: Facts) -> list[Change]:
        if state is None:
            return [Change(f"issued for {', '.join(sorted(wanted))}", (certbot_command(server, force=False),))]
        reasons = []
        if state.domains != wanted:
            reasons.append("the domains changed")
        if state.server != directory:
            reasons.append("the ACME directory changed")
        if not state.fresh:
            reasons.append("it expires within a day")
        if not reasons:
            return []
        return [Change(f"re-issued ({', '.join(reasons)})", (certbot_command(server, force=True),))]
    return decide


def _certificate_note(server: Server):
    def note(facts: Facts) -> str:
        state = facts[certificate_probe(server).key]
        return f"{', '.join(sorted(state.domains))}, valid until {state.not_after}" if state else ""
    return note


def _timer(state: str | None, facts: Facts) -> list[Change]:
    return [] if state == "enabled" else [Change("certbot.timer enabled", ("systemctl enable --now certbot.timer",))]


def certificate(server: Server) -> list[Step]:
    """The renewal setup, then the certificate itself (only for an inventory that lists domains)."""
    layout = server.layout
    bundle = server.inventory.acme.ca_bundle
    env = client_environment(server)
    renewal = [
        File(layout.acme_ca_bundle, bundle.read_text()) if bundle else Absent(layout.acme_ca_bundle),
        *([Directory(RENEWAL_DROPIN.rsplit("/", 1)[0]),
           # secret: the proxy URL in it may carry a user name and password.
           File(RENEWAL_DROPIN, render("certbot/renewal-environment.conf.j2", environment=env), secret=True)]
          if env
          else [Absent(RENEWAL_DROPIN)]),
        Check(Probe("certbot-timer", "systemctl is-enabled certbot.timer", lambda out, rc: out.strip()), _timer),
    ]
    return [
        Step("certificate renewal", renewal, after=["systemctl daemon-reload"], note="certbot.timer, reloads nginx"),
        Step("tls certificate", [Check(certificate_probe(server), certificate_changes(server))],
             note=_certificate_note(server),
             hint="The ACME CA must reach this server on port 80 at every domain listed: check that each "
                  "domain's DNS record points at the server's address."),
    ]
