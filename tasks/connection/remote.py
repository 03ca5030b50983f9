"""The one thin layer that talks to a server: open a connection, run a command, gather probes in one go."""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import logging
import os
import re
import secrets
import select
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import paramiko
from fabric import Config, Connection
from invoke.exceptions import ThreadException

from ..inventory import Host
from ..commands import shell
from ..commands.shell import q
from ..facts.steps import Facts, Probe

# paramiko logs a dropped connection or a late banner, with a traceback, on stderr when nothing else is set up
# to receive its log; gangway says what happened in its own words instead. Logging set up by the user still
# receives paramiko's records.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

CONNECT_TIMEOUT = 15    # seconds for the TCP connection, unless ssh_config's ConnectTimeout or Fabric's config says
SLOW_SERVER_TIMEOUT = 30  # seconds for the server's SSH banner and for authentication: a busy or fresh server is slow
RETRY_DELAYS = (1, 2, 3, 4)  # seconds between connection attempts while a server is still starting: 5 attempts
RETRY_WINDOW = 40       # seconds: no new attempt starts when it could not end within this time
OUTPUT_AFTER_EXIT_S = 5  # seconds a command's output may still arrive after its exit status


class RemoteError(Exception):
    """A server that cannot be reached or a command that failed; the message says what to do."""


class ConnectionLost(RemoteError):
    """The SSH connection went away; gangway never reconnects behind the user's back."""


class HostKeyChanged(RemoteError):
    """The server's host key is not the one recorded: refused before anything is sent."""


class KeyFileError(RemoteError):
    """A key file that cannot be used for logging in."""


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


def say(text: str) -> None:
    print(text, flush=True)


def shown(path: Path) -> str:
    """A path as the user would type it: ~/.ssh/known_hosts rather than /home/ada/.ssh/known_hosts."""
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if home != "/" and (text == home or text.startswith(home + "/")) else text


# --- host keys ------------------------------------------------------------------------------------------------

_KEY_TYPES = {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA", "ssh-dss": "DSA",
              "sk-ssh-ed25519@openssh.com": "ED25519-SK", "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK"}


def key_type(key: paramiko.PKey) -> str:
    """The key's type the way OpenSSH names it in its messages: ED25519, ECDSA, RSA."""
    name = key.get_name()
    return _KEY_TYPES.get(name) or ("ECDSA" if name.startswith("ecdsa-") else name)


def _file_type(key: paramiko.PKey) -> str:
    """The type as sshd names its host key files: /etc/ssh/ssh_host_ed25519_key.pub."""
    return {"ED25519": "ed25519", "ECDSA": "ecdsa", "RSA": "rsa", "DSA": "dsa"}.get(key_type(key), "ed25519")


def fingerprint(key: paramiko.PKey) -> str:
    """The SHA256 fingerprint as OpenSSH prints it: SHA256: and base64 without padding."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def known_hosts_name(address: str, port: int) -> str:
    """How known_hosts names a server: the address alone on port 22, [address]:port otherwise."""
    return address if port == 22 else f"[{address}]:{port}"


def _server(name: str) -> str:
    """`[10.0.0.2]:2222` back to `10.0.0.2 port 2222` for messages."""
    match = re.fullmatch(r"\[(.+)\]:(\d+)", name)
    return f"{match[1]} port {match[2]}" if match else name


def record_host_key(path: Path, name: str, key: paramiko.PKey) -> None:
    """Append one OpenSSH known_hosts line; a missing file is created 600 (and its directory 700)."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if not created and path.is_file() and path.stat().st_size:
            with open(path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                if existing.read(1) != b"\n":
                    os.write(fd, b"\n")
        os.write(fd, f"{name} {key.get_name()} {key.get_base64()}\n".encode())
    finally:
        os.close(fd)


class RecordNewHostKey(paramiko.MissingHostKeyPolicy):
    """First contact with a server: say which key it showed, and record it so later connections are checked."""

    def __init__(self, known_hosts: Path, tell: Callable[[str], None] = say):
        self.known_hosts = known_hosts
        self.tell = tell

    def missing_host_key(self, client, hostname, key):
        try:
            record_host_key(self.known_hosts, hostname, key)
        except OSError as error:
            raise RemoteError(f"cannot record the host key of {_server(hostname)} in {shown(self.known_hosts)} "
                              f"({error.strerror or error}); make the file writable, or name another one "
                              "with known_hosts in the inventory") from None
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.tell(first_contact_line(hostname, key, self.known_hosts))


def first_contact_line(name: str, key: paramiko.PKey, known_hosts: Path) -> str:
    return (f"first connection to {_server(name)}: its {key_type(key)} key is {fingerprint(key)}; "
            f"recorded in {shown(known_hosts)}")


def _other_type(old: paramiko.PKey, new: paramiko.PKey) -> str:
    if key_type(old) == key_type(new):
        return ""
    return (f", or it no longer offers its {key_type(old)} key (gangway's SSH hardening keeps only Ed25519 and "
            "RSA host keys)")


def changed_key_message(name: str, old: paramiko.PKey, new: paramiko.PKey, known_hosts: Path) -> str:
    return (f"the host key of {_server(name)} has CHANGED, so nothing was sent to it. Either someone is "
            "intercepting the connection (a man-in-the-middle attack), or the server was reinstalled or its "
            f"SSH keys were regenerated{_other_type(old, new)}. Recorded in {shown(known_hosts)}: {key_type(old)} "
            f"{fingerprint(old)}; the server now shows: {key_type(new)} {fingerprint(new)}. If you know the change "
            "is legitimate (compare with the server's console: "
            f"ssh-keygen -lf /etc/ssh/ssh_host_{_file_type(new)}_key.pub), "
            f"remove the old key with `ssh-keygen -R {q(name)} -f {shown(known_hosts)}` and connect "
            "again: the new key is then recorded")


@dataclass(frozen=True)
class KnownHosts:
    """Where host keys are read from (the first file that knows a server decides) and where a new one goes."""
    record: Path
    read: tuple[Path, ...]

    @classmethod
    def choose(cls, explicit: Path | None, ssh_config: dict | None = None) -> "KnownHosts":
        """The inventory's (or gangway.known_hosts') file stands in for the user's files, as ssh's
        UserKnownHostsFile option does; otherwise ssh_config's UserKnownHostsFile, ~/.ssh/known_hosts and the
        system-wide file are read, and a new key goes to the first of the user's files."""
        if explicit:
            return cls(explicit, (explicit,))
        default = Path.home() / ".ssh" / "known_hosts"
        configured = (ssh_config or {}).get("userknownhostsfile") or ""
        configured = configured if isinstance(configured, str) else " ".join(configured)
        user = [Path(p).expanduser() for p in configured.split()] or [default]
        read = list(dict.fromkeys([*user, default, Path("/etc/ssh/ssh_known_hosts")]))
        return cls(user[0], tuple(read))

    def holder(self, name: str) -> Path:
        """The file whose entry for `name` decided, for the fix in a message."""
        for path in self.read:
            try:
                if path.is_file() and paramiko.HostKeys(str(path)).lookup(name):
                    return path
            except Exception:
                continue
        return self.record

    def apply(self, client: paramiko.SSHClient, tell: Callable[[str], None] = say) -> None:
        """Check host keys against these files; a server none of them knows is recorded (after Fabric's
        Connection() has installed its AutoAddPolicy, which accepts any key silently)."""
        for path in self.read:
            if not path.is_file():
                continue
            try:
                client.load_system_host_keys(str(path))
            except (OSError, paramiko.SSHException, paramiko.hostkeys.InvalidHostKey, ValueError) as error:
                raise RemoteError(f"cannot read the known hosts file {shown(path)} ({error}); fix or remove "
                                  "the broken line") from None
        client.set_missing_host_key_policy(RecordNewHostKey(self.record, tell))


# --- key files ----------------------------------------------------------------------------------------------

_KEY_CLASSES = (paramiko.RSAKey, paramiko.ECDSAKey, paramiko.Ed25519Key)


def _agent_has_keys() -> bool:
    agent = paramiko.Agent()
    try:
        return bool(agent.get_keys())
    except paramiko.SSHException:
        return False
    finally:
        agent.close()


def key_file_problem(path: Path, passphrase: str | None = None, agent: bool = True) -> str | None:
    """What keeps `path` from being used as an SSH private key, with the fix; None when it is usable."""
    where = shown(path)
    try:
        head = path.read_bytes()[:100].decode("latin-1").lstrip()
    except OSError as error:
        return f"{where}: cannot read this key file ({error.strerror or error}); fix the path or its permissions"
    if head.startswith(("ssh-", "ecdsa-", "sk-")):
        return (f"{where} is a public key, but logging in needs the private key: use the same path without "
                f"{'.pub' if path.suffix == '.pub' else 'the public part'} (e.g. ~/.ssh/id_ed25519)")
    encrypted = False
    for cls in _KEY_CLASSES:
        try:
            cls.from_private_key_file(str(path), password=passphrase)
            return None
        except paramiko.PasswordRequiredException:
            encrypted = True
        except (paramiko.SSHException, ValueError, TypeError, UnicodeError):
            continue
    if encrypted or "ENCRYPTED" in head:
        if agent and _agent_has_keys():
            return None  # the agent may hold it; if it does not, the server's refusal says so
        return (f"{where} is protected by a passphrase and no SSH agent offers it: run `eval $(ssh-agent)` and "
                f"`ssh-add {where}`, or give the passphrase as connect_kwargs.passphrase in fabric.yaml")
    if passphrase and "OPENSSH PRIVATE KEY" in head:
        return f"{where}: the passphrase in connect_kwargs.passphrase does not open this key"
    return (f"{where} is not an SSH private key; point hosts[].key in the inventory (or -i) at your private key, "
            "e.g. ~/.ssh/id_ed25519, or create one with `ssh-keygen -t ed25519`")


# --- connecting ------------------------------------------------------------------------------------------

_TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE}


def transient(error: BaseException) -> bool:
    """An error a server that is still starting (or busy) gives, which a new attempt may not."""
    if isinstance(error, (paramiko.AuthenticationException, paramiko.BadHostKeyException, socket.gaierror,
                          RemoteError)):
        return False
    if isinstance(error, paramiko.ssh_exception.NoValidConnectionsError):
        return True
    if isinstance(error, (socket.timeout, TimeoutError, EOFError)):
        return True
    if isinstance(error, OSError):
        return error.errno in _TRANSIENT_ERRNOS
    if isinstance(error, paramiko.SSHException):
        text = str(error)
        return "protocol banner" in text or "EOF" in text or "reset" in text.lower()
    return False


def retrying(attempt: Callable[[], None], what: str, *, tell: Callable[[str], None] = say,
             sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
             delays: tuple[float, ...] = RETRY_DELAYS, window: float = RETRY_WINDOW) -> int:
    """Run `attempt` until it succeeds, retrying transient errors with growing pauses; at most
    len(delays) + 1 attempts, and none that could not end within `window` seconds. Says "retrying" once.
    Returns the number of attempts; raises the last error."""
    started = clock()
    longest = 0.0
    for number, delay in enumerate((*delays, None), start=1):
        began = clock()
        try:
            attempt()
            return number
        except Exception as error:
            longest = max(longest, clock() - began)
            if (delay is None or not transient(error)
                    or clock() - started + delay + longest > window):
                raise
            if number == 1:
                tell(f"{what}: {describe(error)}; the server may still be starting or busy: retrying for up "
                     f"to {window:g} s")
        sleep(delay)
    raise AssertionError("unreachable")


def describe(error: BaseException) -> str:
    text = str(error).strip() or error.__class__.__name__
    return text if isinstance(error, paramiko.SSHException) else f"{error.__class__.__name__}: {text}"


def make_connection(host: Host, user: str, key: Path | None = None, config=None) -> Connection:
    """A Connection built by Fabric from its config (fabric.yaml's connect_kwargs, ssh_config's Host aliases,
    Port, IdentityFile, ConnectTimeout); the inventory's address, user, port (when not 22) and key win."""
    if config is None:
        config = Config()
    elif not isinstance(config, Config):
        config = config.clone(into=Config)
    kwargs = {k: v for k, v in dict(config.connect_kwargs).items() if k != "key_filename"}
    kwargs.setdefault("banner_timeout", SLOW_SERVER_TIMEOUT)
    kwargs.setdefault("auth_timeout", SLOW_SERVER_TIMEOUT)
    connection = Connection(host.address, user=user, port=host.port if host.port != 22 else None,
                            config=config, connect_kwargs=kwargs)
    if connection.connect_timeout is None and "timeout" not in connection.connect_kwargs:
        connection.connect_timeout = CONNECT_TIMEOUT
    # Fabric lists the config's keys, then ssh_config's IdentityFile ones; the inventory's key goes first.
    # ssh skips IdentityFile entries that do not exist, and so does gangway.
    found = [str(Path(k).expanduser()) for k in connection.connect_kwargs.get("key_filename", [])]
    found = [k for k in found if Path(k).exists()]
    keys = list(dict.fromkeys(([str(key)] if key else []) + found))
    if keys:
        connection.connect_kwargs["key_filename"] = keys
    else:
        connection.connect_kwargs.pop("key_filename", None)
    return connection


def open_connection(host: Host, user: str, stats: Stats, key: Path | None = None, *, config=None,
                    known_hosts: Path | None = None, tell: Callable[[str], None] = say,
                    sleep: Callable[[float], None] = time.sleep) -> Connection:
    """An SSH connection, opened now so that a wrong address, port, key or host key fails here with a clear
    message. The server's host key is checked (or, on first contact, shown and recorded) before logging in."""
    key = key or host.key
    connection = make_connection(host, user, key, config)
    kwargs = connection.connect_kwargs
    usable = []
    for path in kwargs.get("key_filename", []):
        problem = key_file_problem(Path(path), kwargs.get("passphrase"), kwargs.get("allow_agent", True))
        if problem and key and Path(path) == key:
            raise KeyFileError(problem)  # the key the inventory or -i names must work
        if not problem:
            usable.append(path)  # others (ssh_config's IdentityFile, fabric.yaml's) are skipped, as ssh does
    if usable:
        kwargs["key_filename"] = usable
    else:
        kwargs.pop("key_filename", None)
    trust = KnownHosts.choose(known_hosts, connection.ssh_config)
    where = f"{user}@{connection.host} port {connection.port}"
    attempts = []

    def attempt() -> None:
        attempts.append(time.monotonic())
        connection.client.close()  # a failed attempt leaves its transport behind
        trust.apply(connection.client, tell)
        connection.open()

    def tried() -> str:
        return (f" ({len(attempts)} attempts in {time.monotonic() - attempts[0]:.0f} s)" if len(attempts) > 1
                else "")

    try:
        retrying(attempt, where, tell=tell, sleep=sleep)
    except paramiko.BadHostKeyException as error:
        connection.client.close()
        name = known_hosts_name(connection.host, connection.port)
        raise HostKeyChanged(changed_key_message(name, error.expected_key, error.key, trust.holder(name))) from None
    except paramiko.AuthenticationException:
        connection.client.close()
        raise
    except RemoteError:
        connection.client.close()
        raise
    except socket.gaierror:
        raise RemoteError(f"cannot resolve the host name {connection.host!r}: check hosts[].address in the "
                          "inventory (or the -H option)") from None
    except (socket.timeout, TimeoutError):
        connection.client.close()
        raise RemoteError(f"{where}: no answer within {connection.connect_timeout or CONNECT_TIMEOUT} s{tried()}. "
                          "Check the address and port, that the server is running, and that a firewall lets SSH "
                          "through") from None
    except (paramiko.ssh_exception.NoValidConnectionsError, ConnectionError, OSError, EOFError) as error:
        connection.client.close()
        raise RemoteError(f"{where}: cannot connect ({describe(error)}){tried()}. Check the address and port, "
                          "and that the SSH server runs") from None
    except paramiko.SSHException as error:
        connection.client.close()
        if "authentication" in str(error).lower():  # e.g. "No authentication methods available": no key at all
            raise paramiko.AuthenticationException(str(error)) from None
        if transient(error):
            raise RemoteError(f"{where}: the server's SSH did not answer in time ({error}){tried()}: it may be "
                              "overloaded or still starting; try again in a minute") from None
        raise RemoteError(f"{where}: SSH failed: {error}") from None
    stats.connections += 1
    # Small packets at once: a script is sent as its request, its input and the input's end, and Nagle's
    # algorithm would hold the later ones for the server's delayed acknowledgement (about 40 ms per command).
    sock = connection.client.get_transport().sock
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


# A long run of base64 (a file's content written by shell.write_file, a packed program): data, not a command.
_DATA = re.compile(r"[A-Za-z0-9+/]{160,}={0,2}")
# The password part of a URL (an outbound proxy's user:password@).
_URL_PASSWORD = re.compile(r"(://[^\s:/@'\"]+:)[^\s@'\"]+@")


def shown_command(command: str) -> str:
    """A command as `-v` prints it: file contents it carries replaced by their size (they may be secret, and
    they are not what a reader wants to see), and URL passwords by ***."""
    command = _DATA.sub(lambda m: f"<{len(base64.b64decode(m[0] + '=' * (-len(m[0]) % 4), validate=False))} "
                                  "bytes>", command)
    return _URL_PASSWORD.sub(r"\1***@", command)


def echo_line(host: str, what: str) -> str:
    """One verbose line: the host and the command, later lines of a script indented under the first."""
    return f"    [{host}] $ " + what.replace("\n", "\n        ")


# How `Remote.run` starts a script: it reads the script whole from its input (which the sender ends with the
# SCRIPT_END line), refuses a script cut short, and runs it with no input of its own, as a command would.
SCRIPT_END = "\n#gangway:end"
SCRIPT_READER = ("gw_script=$(cat) || exit 125\n"
                 "case $gw_script in *'#gangway:end') ;; *) echo 'gangway: the script arrived incomplete' >&2; "
                 "exit 125;; esac\n"
                 "exec </dev/null\n"
                 "eval \"$gw_script\"")


class Remote:
    """Runs commands on one server, as root: directly when logged in as root, through `sudo -n` otherwise.
    With `echo` set (-v, gangway.verbose) every command is printed as it runs, as `shown_command` shows it."""

    def __init__(self, connection: Connection, stats: Stats, echo: Callable[[str], None] | None = None):
        self.connection = connection
        self.stats = stats
        self.user = connection.user
        self.wrap: Callable[[str], str] | None = None  # e.g. a lock every command must hold
        self.echo = echo

    def _echo(self, command: str) -> None:
        if self.echo:
            self.echo(echo_line(self.connection.host, shown_command(command)))

    @property
    def name(self) -> str:
        return f"{self.user}@{self.connection.host}"

    def _lost(self, doing: str, what: str = "it") -> ConnectionLost:
        return ConnectionLost(f"the connection to {self.connection.host} was lost while {doing}; the server may "
                              f"have finished or stopped {what}, and nothing more was sent. Check that the server "
                              "is up (ssh to it), then run the same task again: it starts from what the server has")

    def _connected(self) -> bool:
        transport = self.connection.client.get_transport()
        return bool(transport and transport.is_active())

    def _ensure_connected(self, doing: str) -> None:
        """Fabric would open a new connection silently; a lost one is reported instead (the deploy lock, for
        one, lives on the first connection)."""
        if not self._connected():
            raise self._lost(f"idle, before {doing}", "the previous command")

    def _gone_after(self, seconds: float = 1.0) -> bool:
        """True once the transport has ended: a channel closes a moment before its transport says so."""
        deadline = time.monotonic() + seconds
        while self._connected():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _prepared(self, command: str, echo: bool = True) -> str:
        """`command` wrapped, counted, and printed first with -v; the connection checked before it is used."""
        if echo:
            self._echo(command)
        if self.wrap:
            command = self.wrap(command)
        self._ensure_connected("the next command")
        self.stats.commands += 1
        return command

    def _as_sent(self, command: str, as_root: bool = True, echo: bool = True) -> str:
        """`command` as `attached` sends it: prepared, and through sudo unless logged in as root."""
        command = self._prepared(command, echo)
        return f"sudo -n -H sh -c {q(command)}" if as_root and self.user != "root" else command

    def run(self, command: str, *, as_root: bool = True, timeout: int | None = None, echo: bool = True,
            progress: Callable[[str], None] | None = None) -> Result:
        """Run a script and return its output and exit status. The script travels on the command's standard
        input, not as an argument: no size limit (Linux caps one argument at 128 KiB), and no quoting of it.
        `progress` is told each progress line (shell.watched) as it comes; they are not in the result."""
        command = self._prepared(command, echo)
        reader = f"sudo -n -H sh -c {q(SCRIPT_READER)}" if as_root and self.user != "root" else \
            f"sh -c {q(SCRIPT_READER)}"
        try:
            return self._exec(reader, (command + SCRIPT_END).encode(), timeout, progress)
        except (paramiko.SSHException, OSError, EOFError) as error:
            if self._gone_after():
                raise self._lost("running a command") from None
            raise RemoteError(f"{self.name}: running a command failed ({describe(error)}); the server kept "
                              "whatever it had finished. Run the same task again.") from None

    def _exec(self, command: str, stdin: bytes, timeout: float | None,
              progress: Callable[[str], None] | None = None) -> Result:
        """One channel: `command` started, `stdin` sent and closed, stdout and stderr read as they come (both,
        so that neither fills the channel's window while the other is awaited) until the command ends; each
        whole progress line of stderr is handed to `progress` as it comes."""
        channel = self.connection.client.get_transport().open_session()
        try:
            channel.exec_command(command)
            channel.sendall(stdin)
            channel.shutdown_write()
            out, err = bytearray(), bytearray()
            told = 0  # how much of stderr was looked at for progress lines
            deadline = time.monotonic() + timeout if timeout else None
            exited = None
            while True:
                if channel.recv_ready():
                    out += channel.recv(65536)
                elif channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                    if progress is not None and (end := err.rfind(b"\n") + 1) > told:
                        for said in shell.progress_lines(err[told:end].decode(errors="replace"))[0]:
                            progress(said)
                        told = end
                elif channel.exit_status_ready() and channel.eof_received:
                    break
                else:
                    if channel.exit_status_ready():
                        # sshd may send the exit status before the last of the output it still reads from the
                        # program's pipes (seen on a busy server: a gather cut short). The end of the output
                        # follows within moments, unless a process left behind holds the pipe open.
                        exited = exited or time.monotonic()
                        if time.monotonic() - exited > OUTPUT_AFTER_EXIT_S:
                            break
                    if deadline and time.monotonic() > deadline:
                        raise RemoteError(f"a command on {self.connection.host} did not finish within {timeout} s")
                    if not self._connected():
                        raise EOFError("the connection closed")
                    # paramiko makes the channel selectable: readable on output of either kind, or its end
                    select.select([channel], [], [], 0.02)
            while channel.recv_ready() or channel.recv_stderr_ready():  # what came with the exit status
                out += channel.recv(65536) if channel.recv_ready() else b""
                err += channel.recv_stderr(65536) if channel.recv_stderr_ready() else b""
            code = channel.recv_exit_status()
        finally:
            channel.close()
        stdout, stderr = out.decode(errors="replace"), shell.progress_lines(err.decode(errors="replace"))[1]
        if code == -1:
            if self._gone_after():
                raise self._lost("running a command")
            # the connection is fine: the command ended by a signal, which SSH reports without an exit status
            return Result(stdout, (stderr + "\n(the command was ended by a signal)").strip(), -1)
        return Result(stdout, stderr, code)

    def attached(self, command: str, terminal: bool) -> int:
        """Run `command` (as root) with its output streaming here as it comes, and with a terminal (a pty fed
        by this process's own) when `terminal`: an interactive program's prompts. Returns its exit status."""
        return self.attached_result(command, terminal).code

    def attached_result(self, command: str, terminal: bool) -> Result:
        """`attached`, returning what the command printed as well (shown already as it came; with a terminal
        its stderr is in its stdout), for a message to read after it failed."""
        command = self._as_sent(command)
        try:
            # Without a terminal the command's input ends at once: a command that reads it (dbshell) ends
            # instead of waiting for ever (a file goes along with --file).
            r = self.connection.run(command, pty=terminal, warn=True,
                                    in_stream=None if terminal else io.StringIO(""))
        except (paramiko.SSHException, OSError, EOFError, ThreadException) as error:
            if self._gone_after():
                raise self._lost("running a command") from None
            raise RemoteError(f"{self.name}: running a command failed ({describe(error)})") from None
        if r.exited is None or r.exited == -1:
            if self._gone_after():
                raise self._lost("running a command")
            return Result(r.stdout or "", r.stderr or "", 255)
        return Result(r.stdout or "", r.stderr or "", r.exited)

    def start(self, command: str, timeout: float = 30) -> paramiko.Channel:
        """Start `command` on its own channel and hand the channel back (a process that must live as long as
        this connection, like the deploy lock's holder); a lost connection is reported as one."""
        self._echo(command)
        self._ensure_connected("starting a command")
        self.stats.commands += 1
        try:
            channel = self.connection.client.get_transport().open_session()
            channel.settimeout(timeout)
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError):
            raise self._lost("starting a command") from None
        return channel

    def put(self, data: bytes, path: str) -> None:
        """Upload `data` to `path` over SFTP, as the logged-in user."""
        self._sftp(f"put {path} ({len(data)} bytes over SFTP)", f"uploading {path}", "the upload",
                   lambda: self.connection.put(io.BytesIO(data), path))

    def get(self, path: str, local: str) -> None:
        """Download `path` over SFTP, as the logged-in user, into the local file `local`."""
        self._sftp(f"get {path} (over SFTP)", f"downloading {path}", "the download",
                   lambda: self.connection.get(path, local))

    def _sftp(self, shown: str, doing: str, transfer_name: str, transfer: Callable[[], object]) -> None:
        """One SFTP transfer, counted and echoed like a command; a lost connection is said as such."""
        if self.echo:
            self.echo(f"    [{self.connection.host}] {shown}")
        self._ensure_connected(doing)
        self.stats.commands += 1
        try:
            transfer()
        except (paramiko.SSHException, OSError, EOFError) as error:
            if self._gone_after():
                raise self._lost(doing, transfer_name) from None
            raise RemoteError(f"{self.name}: {doing} failed ({describe(error)})") from None

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
        if self.echo:  # the probes as they were written, not the wrapping that separates their outputs
            self.echo(f"    [{self.connection.host}] {len(probes)} read-only probes, in one command:")
            for probe in probes:
                self.echo(f"        $ {shown_command(probe.command)}")
        result = self.run("\n".join(parts), echo=False)
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
