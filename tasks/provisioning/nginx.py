"""nginx: the site, the placeholder pages, and Debian's default site out of the way.

The site is rendered with TLS only once a certificate exists (the first pass serves the ACME challenge over
HTTP). Every change is checked with `nginx -t` before the reload; a rejected config is rolled back.
"""

from __future__ import annotations

import re

from .. import defaults
from ..layout import ACME_WEBROOT, CONFIG_ROOT
from . import Server
from .tls import certificate_probe
from ..commands.render import TEMPLATES, render
from ..project.readiness import MEDIA_LOCATION, STATIC_LOCATION
from ..facts.steps import Absent, Facts, File, FileIfAbsent, Link, Probe, Step

DHPARAM = f"{CONFIG_ROOT}/ffdhe2048.pem"
DEFAULT_SITE = "/etc/nginx/sites-enabled/default"


def parse_version(out: str, rc: int) -> tuple[int, ...]:
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in match.groups()) if match else (0, 0, 0)


NGINX_VERSION = Probe("nginx-version", "nginx -v 2>&1", parse_version)


def certificate_present(facts: Facts, server: Server) -> bool:
    state = facts[certificate_probe(server).key]
    return bool(server.inventory.tls and state and state.fresh)


def site_config(server: Server, tls: bool, nginx_version: tuple[int, ...]) -> str:
    layout = server.layout
    app = server.inventory.app
    return render("nginx/site.conf.j2", app=app.name, domains=app.domains, tls=tls,
                  http2_directive=nginx_version >= (1, 25, 1), certificate_dir=layout.certificate_dir,
                  dhparam=DHPARAM, acme_webroot=ACME_WEBROOT, backend=layout.nginx_backend,
                  static=layout.static, media=layout.media, pages=layout.placeholder,
                  static_location=STATIC_LOCATION, media_location=MEDIA_LOCATION,
                  max_upload_mb=app.max_upload_mb, maintenance_flag=layout.maintenance_flag,
                  retry_after=defaults.MAINTENANCE_RETRY_AFTER_S, asgi=app.server == "asgi",
                  upgrade_variable=f"{app.name}_connection_upgrade")


def site(server: Server) -> Step:
    layout = server.layout
    app = server.inventory.app.name

    def config(facts: Facts) -> str:
        return site_config(server, certificate_present(facts, server), facts[NGINX_VERSION.key])

    def note(facts: Facts) -> str:
        return "HTTPS" if certificate_present(facts, server) else "HTTP only (no certificate yet)"

    return Step("nginx site", [
        File(f"{layout.placeholder}/index.html", render("pages/index.html.j2", app=app, tls=server.inventory.tls)),
        File(f"{layout.placeholder}/unavailable.html", render("pages/unavailable.html.j2", app=app)),
        File(f"{layout.placeholder}/maintenance.html", render("pages/maintenance.html.j2", app=app)),
        File(DHPARAM, (TEMPLATES / "nginx/ffdhe2048.pem").read_text()),
        FileIfAbsent(layout.nginx_backend, render("nginx/backend-placeholder.conf.j2", app=app,
                                                  pages=layout.placeholder)),
        File(layout.nginx_site, config),
        Link(layout.nginx_site_enabled, layout.nginx_site),
        Absent(DEFAULT_SITE, "Debian's default site"),
    ], extra_probes=[NGINX_VERSION, certificate_probe(server)], validate="nginx -t",
        after=["systemctl reload-or-restart nginx"], note=note)
