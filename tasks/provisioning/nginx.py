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


def port_80(address: str) -> str:
    """ADDRESS:80 as nginx's listen and upstream server take it (an IPv6 address in brackets)."""
    return f"[{address}]:80" if ":" in address else f"{address}:80"


def _shared(server: Server, tls: bool, nginx_version: tuple[int, ...]) -> dict:
    """What the site and the load balancer's site are both rendered with (templates/nginx/common.j2)."""
    layout, app = server.layout, server.inventory.app
    return dict(app=app.name, domains=app.domains, tls=tls, http2_directive=nginx_version >= (1, 25, 1),
                certificate_dir=layout.certificate_dir, dhparam=DHPARAM, acme_webroot=ACME_WEBROOT,
                pages=layout.placeholder, max_upload_mb=app.max_upload_mb, maintenance_flag=layout.maintenance_flag,
                retry_after=defaults.MAINTENANCE_RETRY_AFTER_S, asgi=app.server == "asgi",
                upgrade_variable=f"{app.name}_connection_upgrade")


def site_config(server: Server, tls: bool, nginx_version: tuple[int, ...]) -> str:
    """The site this server's nginx serves: the load balancer's on the lb host, else the app's, which a web
    host behind a load balancer serves on its private address, over HTTP, to the load balancer alone."""
    if server.has("lb"):
        return lb_config(server, tls, nginx_version)
    layout, inventory = server.layout, server.inventory
    lb = inventory.lb_in_front_of(server.host)
    shared = _shared(server, tls and lb is None, nginx_version)  # behind a load balancer, it holds the certificate
    return render("nginx/site.conf.j2", **shared, backend=layout.nginx_backend,
                  static=layout.static, media=layout.media, static_location=STATIC_LOCATION,
                  media_location=MEDIA_LOCATION, lb=lb.peer_address if lb else None,
                  listen=port_80(server.host.peer_address), https_front=inventory.tls and lb is not None,
                  proto_variable=f"{inventory.app.name}_forwarded_proto")


def lb_config(server: Server, tls: bool, nginx_version: tuple[int, ...]) -> str:
    """The load balancer's site: TLS, the redirects and headers of the app's site, and every request passed to
    the web hosts' nginx over the private network, with failover."""
    inventory = server.inventory
    return render("nginx/lb.conf.j2", **_shared(server, tls, nginx_version),
                  upstream=f"{inventory.app.name}_web",
                  peers=[port_80(host.peer_address) for host in inventory.with_role("web")],
                  max_fails=defaults.LB_MAX_FAILS, fail_timeout=defaults.LB_FAIL_TIMEOUT_S,
                  connect_timeout=defaults.LB_CONNECT_TIMEOUT_S)


def site(server: Server) -> Step:
    layout = server.layout
    app = server.inventory.app.name

    def config(facts: Facts) -> str:
        return site_config(server, certificate_present(facts, server), facts[NGINX_VERSION.key])

    lb = server.inventory.lb_in_front_of(server.host)

    def note(facts: Facts) -> str:
        if lb:
            return (f"HTTP on {port_80(server.host.peer_address)}, for the load balancer {lb.peer_address} "
                    "alone (it holds the certificate)")
        upstream = (f"; passes to {', '.join(port_80(h.peer_address) for h in server.inventory.with_role('web'))}"
                    if server.has("lb") else "")
        return ("HTTPS" if certificate_present(facts, server) else "HTTP only (no certificate yet)") + upstream

    # The load balancer has no release to serve: only the pages it answers itself.
    app_files = [] if server.has("lb") else [
        File(f"{layout.placeholder}/index.html", render("pages/index.html.j2", app=app, tls=server.inventory.tls)),
        FileIfAbsent(layout.nginx_backend, render("nginx/backend-placeholder.conf.j2", app=app,
                                                  pages=layout.placeholder))]
    return Step("nginx site", [
        *app_files,
        File(f"{layout.placeholder}/unavailable.html", render("pages/unavailable.html.j2", app=app)),
        File(f"{layout.placeholder}/maintenance.html", render("pages/maintenance.html.j2", app=app)),
        File(DHPARAM, (TEMPLATES / "nginx/ffdhe2048.pem").read_text()),
        File(layout.nginx_site, config),
        Link(layout.nginx_site_enabled, layout.nginx_site),
        Absent(DEFAULT_SITE, "Debian's default site"),
    ], extra_probes=[NGINX_VERSION, certificate_probe(server)], validate="nginx -t",
        after=[reload_after_site(server)], note=note)


def reload_after_site(server: Server) -> str:
    """How nginx takes a new site. A reload cannot move a listening port from every address (Debian's default
    site, a single server's site) to one address: the master still holds the wildcard socket, the bind fails,
    and nginx goes on with the old config while `systemctl reload` says nothing. So a web host behind a load
    balancer, which listens on its own addresses, is restarted: the load balancer passes the requests it
    refuses meanwhile to the other web hosts."""
    return "systemctl restart nginx" if server.inventory.lb_in_front_of(server.host) else \
        "systemctl reload-or-restart nginx"
