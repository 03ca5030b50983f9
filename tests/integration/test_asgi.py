"""ASGI on a real server (app.server: asgi): provision renders Gunicorn with Uvicorn's worker class and an nginx
site that passes websocket upgrades; a deploy builds a venv with uvicorn-worker added and serves, over HTTPS
through nginx by the site's name, an async view and a websocket echo; a second deploy under load drops no
request, neither from a client that connects anew for each request nor from one that keeps its connections
open (wrk). Runs on the shared Debian 13 server, which it gives back provisioned for WSGI (the default)."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time

import pytest

from tasks.layout import Layout
from tests.integration.appsite import deployed_id, make_site
from tests.integration.conftest import APP, DOMAINS
from tests.load import Load
from tests.outside import tls_context
from tests.wrk import Wrk

# The test app's ASGI application: websockets to a tiny echo (which names its release), the rest to Django.
ASGI = '''import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

django_application = get_asgi_application()


async def echo(scope, receive, send):
    release = os.environ.get("GANGWAY_RELEASE", "unknown")
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": f"echo {release}: {message.get('text') or ''}"})
        else:
            return


async def application(scope, receive, send):
    if scope["type"] == "websocket":
        await echo(scope, receive, send)
    else:
        await django_application(scope, receive, send)
'''
ASYNC_VIEW = '''

async def hello_async(request):
    """An async view: under ASGI it runs in the event loop, and its request is an ASGIRequest."""
    await asyncio.sleep(0)
    return HttpResponse(f"async {release()} {type(request).__name__}", content_type="text/plain")
'''
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory):
    site = make_site(trixie, tmp_path_factory, "asgi", server="asgi")
    views = (site.repo.path / "counter/views.py").read_text()
    urls = (site.repo.path / "mysite/urls.py").read_text()
    site.repo.commit("an ASGI application with a websocket echo, and an async view", **{
        "mysite__asgi.py": ASGI,
        "counter__views.py": "import asyncio\n" + views + ASYNC_VIEW,
        "mysite__urls.py": urls.replace('    path("admin/"', '    path("async/", views.hello_async),\n'
                                                            '    path("admin/"'),
    })
    try:
        site.fab("provision")
        yield site
    finally:
        trixie.provision()  # the shared server back to the default inventory (WSGI) for the modules after this


def websocket_echo(site, text: str, path: str = "/ws/") -> str:
    """One websocket round trip over HTTPS to the site's name: the handshake, one masked text frame, the
    server's text frame back (RFC 6455, with the standard library only)."""
    host = site.server.host
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((host.address, 443), timeout=10) as raw:
        with tls_context(host.acme_root).wrap_socket(raw, server_hostname=DOMAINS[0]) as sock:
            sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {DOMAINS[0]}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                          "\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(1)
                assert chunk, f"the connection closed during the handshake: {head!r}"
                head += chunk
            lines = head.decode("latin-1").split("\r\n")
            assert lines[0].split()[1] == "101", head
            headers = {name.strip().lower(): value.strip() for name, _, value in
                       (line.partition(":") for line in lines[1:] if line)}
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            assert headers.get("sec-websocket-accept") == accept, headers
            payload, mask = text.encode(), os.urandom(4)
            assert len(payload) < 126
            sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask
                         + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            while True:
                first, second = read_exactly(sock, 2)
                length = second & 0x7F
                if length == 126:
                    length = struct.unpack("!H", read_exactly(sock, 2))[0]
                elif length == 127:
                    length = struct.unpack("!Q", read_exactly(sock, 8))[0]
                data = read_exactly(sock, length)
                if first & 0x0F == 0x1:  # a text frame; a ping the server may send meanwhile is skipped
                    sock.sendall(bytes([0x88, 0x80]) + os.urandom(4))  # close, as a client does
                    return data.decode()


def read_exactly(sock, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the connection closed mid-frame"
        data += chunk
    return data


def test_provision_renders_uvicorn_workers_and_websocket_upgrades(site):
    layout = Layout(APP)
    assert 'worker_class = "uvicorn_worker.UvicornWorker"' in site.root(f"cat {layout.gunicorn_conf}")
    assert f" {APP}.asgi:application" in site.root(f"cat {layout.unit_path}")
    nginx = site.root(f"cat {layout.nginx_site}")
    assert "proxy_http_version 1.1;" in nginx and f"proxy_set_header Connection ${APP}_connection_upgrade;" in nginx
    site.root("nginx -t")


def test_an_async_view_and_a_websocket_echo_answer_over_https(site):
    release = deployed_id(site.deploy())
    venv = site.root(f"readlink -f /srv/{APP}/releases/{release}/.venv")
    # uv builds venvs without pip in them: the venv's own Python lists what is installed.
    installed = site.root(f"{venv.strip()}/bin/python -c 'import importlib.metadata as m; "
                          "print(*(d.name + \"==\" + d.version for d in m.distributions()))'")
    assert "uvicorn-worker==" in installed.lower() and "websockets==" in installed.lower(), installed
    response = site.get("/async/")
    assert response.status == 200 and response.body.strip() == f"async {release} ASGIRequest", response
    assert websocket_echo(site, "hello $(id) 100%") == f"echo {release}: hello $(id) 100%"


def test_a_switch_under_load_drops_no_request(site):
    # Its own starting point, whatever ran before: a live ASGI release.
    site.repo.set_version("asgi-1")
    before = deployed_id(site.deploy())
    site.repo.set_version("asgi-2")
    host = site.server.host
    # Both kinds of client at once: a connection per request, and 16 kept-alive connections (wrk), which see
    # what a new connection cannot: nginx's upstream connections and Uvicorn's workers going away mid-switch.
    with Load(host.address, DOMAINS[0], host.acme_root, path="/version/", workers=4, max_seconds=90) as load, \
            Wrk(host.address, DOMAINS[0], "/version/", seconds=90, connections=16, threads=2) as kept:
        release = deployed_id(site.deploy())
        returned = time.monotonic()
        time.sleep(1)
    assert release != before
    assert len(load.samples) > 20, load.samples
    assert load.failures() == [], load.failures()[:5]
    assert load.answered_after(returned) == {f"asgi-2 {release}"}
    result = kept.result
    assert result.requests > 20, result.output
    print(f"\nwrk -t2 -c16 during the ASGI switch: {result.summary()}")
    # No kept-alive connection was lost and every answer was a 200. (A 502 in 14,397 answers once came from
    # Uvicorn's workers recycling under load: they no longer are, see templates/gunicorn/gunicorn.conf.py.j2.)
    assert result.errors == {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non-2xx/3xx": 0}, \
        result.summary()
    assert {status for (status, _) in result.answers} == {200}, result.answers
    # It spanned the switch: the release before and the new one both answered it.
    assert {body.split()[-1] for (status, body) in result.answers if status == 200} == {before, release}, \
        result.answers
    assert websocket_echo(site, "after the switch") == f"echo {release}: after the switch"
