"""Checks made from outside the server, as a visitor or an attacker would: plain sockets and TLS."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str
    cookies: dict[str, str] = field(default_factory=dict)  # from the Set-Cookie headers: name -> value

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def _read_response(sock) -> Response:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers, cookies = {}, {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
        if name.strip().lower() == "set-cookie":
            cookie, _, _ = value.strip().partition(";")
            cookies[cookie.partition("=")[0]] = cookie.partition("=")[2]
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return Response(int(lines[0].split()[1]), headers, body.decode("utf-8", "replace"), cookies)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


def _request(path: str, name: str, method: str = "GET", headers: dict[str, str] | None = None,
             body: bytes = b"") -> bytes:
    extra = "".join(f"{key}: {value}\r\n" for key, value in (headers or {}).items())
    if body:
        extra += f"Content-Length: {len(body)}\r\n"
    return (f"{method} {path} HTTP/1.1\r\nHost: {name}\r\nUser-Agent: gangway-tests\r\n{extra}"
            f"Connection: close\r\n\r\n").encode() + body


def http_get(address: str, name: str, path: str = "/", timeout: float = 10) -> Response:
    with socket.create_connection((address, 80), timeout=timeout) as sock:
        sock.sendall(_request(path, name))
        return _read_response(sock)


def tls_context(cafile) -> ssl.SSLContext:
    """Verifies the chain against `cafile` only (the test CA's root), and the host name."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.check_hostname = True
    return context


def https_get(address: str, name: str, cafile, path: str = "/", timeout: float = 10) -> Response:
    return https_request(address, name, cafile, path, timeout=timeout)


def https_request(address: str, name: str, cafile, path: str = "/", method: str = "GET",
                  headers: dict[str, str] | None = None, body: bytes = b"", timeout: float = 10) -> Response:
    """One HTTPS request to ADDRESS for the site NAME, verified against CAFILE; HEADERS are added as given."""
    with socket.create_connection((address, 443), timeout=timeout) as raw:
        with tls_context(cafile).wrap_socket(raw, server_hostname=name) as sock:
            sock.sendall(_request(path, name, method, headers, body))
            return _read_response(sock)


def tls_version(address: str, name: str, cafile, version: ssl.TLSVersion) -> bool:
    """Whether the server completes a handshake pinned to `version`."""
    context = tls_context(cafile)
    context.minimum_version = context.maximum_version = version
    try:
        with socket.create_connection((address, 443), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=name):
                return True
    except (ssl.SSLError, OSError):
        return False


def port_open(address: str, port: int, timeout: float = 1.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
