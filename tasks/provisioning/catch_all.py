"""nginx's catch-all: a request for a host name that no site here serves is refused, not served a site.

It matters only once the site has domains: a site without domains answers by address and is itself the
default server, so then the catch-all is removed.
"""

from __future__ import annotations

from . import Server
from .nginx import NGINX_VERSION, port_80
from ..commands.render import render
from ..facts.steps import Absent, Facts, File, Step

CATCH_ALL = "/etc/nginx/conf.d/gangway-catch-all.conf"
# ssl_reject_handshake: refuse TLS for an unknown name without a certificate to show.
REJECT_HANDSHAKE_SINCE = (1, 19, 4)


def config(nginx_version: tuple[int, ...], listen: tuple[str, ...] = ()) -> str:
    """The catch-all for every address port 80 and 443 listen on; `listen`: only these (port 80 only, HTTP), where
    a web server behind the load balancer listens."""
    return render("nginx/catch-all.conf.j2", listen=list(listen or ("80", "[::]:80")),
                  reject_handshake=not listen and nginx_version >= REJECT_HANDSHAKE_SINCE)


def unknown_hosts(server: Server) -> Step:
    if not server.inventory.app.domains:
        return Step("nginx catch-all", [Absent(CATCH_ALL, "the site without domains answers every name")],
                    validate="nginx -t", after=["systemctl reload-or-restart nginx"],
                    note="none: the site answers every name")

    behind_lb = server.inventory.lb_in_front_of(server.host)
    listen = (port_80(server.host.peer_address), "127.0.0.1:80") if behind_lb else ()

    def content(facts: Facts) -> str:
        return config(facts[NGINX_VERSION.key], listen)

    return Step("nginx catch-all", [File(CATCH_ALL, content)], extra_probes=[NGINX_VERSION],
                validate="nginx -t", after=["systemctl reload-or-restart nginx"],
                note="unknown host names refused (444, TLS handshake rejected)")
