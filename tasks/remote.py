"""The one thin layer that talks to a server: open a connection, run a command, gather probes in one go."""

from __future__ import annotations

import io
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import paramiko
from fabric import Connection

from tasks.inventory import Host
from tasks.shell import q
from tasks.steps import Facts, Probe

CONNECT_TIMEOUT = 15


class RemoteError(Exception):
    """A server that cannot be reached or a command that failed; the message says what to do."""


@dataclass
class Stats:
    """What a run cost: counted so the recap and the benchmark can show it."""
    commands: int = 0
    connections: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def summary(self) -> str:
        """e.g. "1 remote command over 1 SSH connection in 0.41 s"."""
        return (f"{self.commands} remote command{'s' * (self.commands != 1)} over {self.connections} SSH "
                f"connection{'s' * (self.connections != 1)} in {self.seconds:.2f} s")


@dataclass
class Result:
    stdout: str
    stderr: str
    code: int

    @property
    def ok(self) -> bool:
        return self.code == 0

    def tail(self, lines: int = 25) -> str:
        text = "\n".join(x for x in (self.stderr.strip(), self.stdout.strip()) if x)
        return "\n".join(text.splitlines()[-lines:])


def _connect_kwargs(key: Path | None) -> dict:
    return {"key_filename": [str(key)]} if key else {}


def open_connection(host: Host, user: str, stats: Stats, key: Path | None = None) -> Connection:
    """An SSH connection, opened now so that a wrong address, port or key fails here with a clear message."""
    connection = Connection(host.address, user=user, port=host.port, connect_timeout=CONNECT_TIMEOUT,
                            connect_kwargs=_connect_kwargs(key or host.key))
    where = f"{user}@{host.address} port {host.port}"
    try:
        connection.open()
    except paramiko.AuthenticationException:
        raise
    except socket.gaierror:
        raise RemoteError(f"cannot resolve the host name {host.address!r}: check hosts[].address in the "
                          "inventory (or the -H option)") from None
    except (socket.timeout, TimeoutError):
        raise RemoteError(f"{where}: no answer within {CONNECT_TIMEOUT} s. Check the address and port, that "
                          "the server is running, and that a firewall lets SSH through") from None
    except (paramiko.ssh_exception.NoValidConnectionsError, ConnectionError, OSError) as error:
        raise RemoteError(f"{where}: cannot connect ({error.__class__.__name__}: {error}). Check the address "
                          "and port, and that the SSH server runs") from None
    except paramiko.SSHException as error:
        raise RemoteError(f"{where}: SSH failed: {error}") from None
    stats.connections += 1
    return connection


class Remote:
    """Runs commands on one server, as root: directly when logged in as root, through `sudo -n` otherwise."""

    def __init__(self, connection: Connection, stats: Stats):
        self.connection = connection
        self.stats = stats
        self.user = connection.user
        self.wrap: Callable[[str], str] | None = None  # e.g. a lock every command must hold

    @property
    def name(self) -> str:
        return f"{self.user}@{self.connection.host}"

    def run(self, command: str, *, as_root: bool = True, timeout: int | None = None) -> Result:
        if self.wrap:
            command = self.wrap(command)
        if as_root and self.user != "root":
            command = f"sudo -n -H sh -c {q(command)}"
        self.stats.commands += 1
        try:
            r = self.connection.run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise RemoteError(f"{self.name}: the connection broke while running a command ({error}); the "
                              "server kept whatever it had finished. Run the same command again.") from None
        return Result(r.stdout, r.stderr, r.exited)

    def put(self, data: bytes, path: str) -> None:
        """Upload `data` to `path` over SFTP, as the logged-in user."""
        self.stats.commands += 1
        try:
            self.connection.put(io.BytesIO(data), path)
        except (paramiko.SSHException, OSError) as error:
            raise RemoteError(f"{self.name}: uploading {path} failed ({error})") from None

    def check(self, command: str, what: str, **kwargs) -> Result:
        """Run and raise RemoteError with the command's own output when it fails."""
        result = self.run(command, **kwargs)
        if not result.ok:
            raise RemoteError(f"{what} failed on {self.connection.host} (exit {result.code}):\n{result.tail()}")
        return result

    def gather(self, probes: Iterable[Probe]) -> Facts:
        """Run every probe in one remote command and parse each one's output: one round trip, not one per fact."""
        probes = list(probes)
        if not probes:
            return {}
        token = "gw" + secrets.token_hex(8)
        parts = [f"echo {token}; ( {p.command} ) </dev/null 2>/dev/null; printf '\\n{token} %s\\n' $?"
                 for p in probes]
        result = self.run("\n".join(parts))
        sections = parse_sections(result.stdout, token, len(probes))
        if sections is None:
            hint = (f"\n{self.user} needs sudo without a password here (or connect as root)"
                    if "password is required" in result.stderr else "")
            raise RemoteError(f"could not read the server's state from {self.connection.host} "
                              f"(exit {result.code}):\n{result.tail()}{hint}")
        return {p.key: p.parse(out, rc) for p, (out, rc) in zip(probes, sections)}

    def close(self) -> None:
        self.connection.close()


def parse_sections(stdout: str, token: str, count: int) -> list[tuple[str, int]] | None:
    """Split a gather's output into (output, exit code) per probe; None if it is not all there."""
    sections = []
    for chunk in stdout.split(f"{token}\n")[1:]:
        body, sep, rest = chunk.rpartition(f"\n{token} ")
        if not sep:
            return None
        sections.append((body, int(rest.strip() or 1)))
    return sections if len(sections) == count else None
