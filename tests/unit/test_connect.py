"""Connecting without SSH: host keys (first contact, changed key), key files, retries, lost connections."""

import os
import shutil
import socket
import stat
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest
from fabric import Config, Connection
from invoke import Context
from paramiko.config import SSHConfig

from tasks import inventory
from tasks.connection import remote, targets
from tasks.inventory import Host, InventoryError, for_host
from tasks.connection.remote import (ConnectionLost, HostKeyChanged, KeyFileError, KnownHosts, RecordNewHostKey, Remote,
                          RemoteError, Stats, changed_key_message, fingerprint, key_file_problem, key_type,
                          known_hosts_name, retrying)


def ed25519(tmp_path: Path, name: str = "key", passphrase: str = "") -> Path:
    if not shutil.which("ssh-keygen"):
        pytest.skip("needs ssh-keygen")
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "", "-f", str(path)], check=True)
    return path


def public(path: Path) -> paramiko.PKey:
    kind, data = path.with_suffix(".pub").read_text().split()[:2]
    return paramiko.PKey.from_type_string(kind, __import__("base64").b64decode(data))


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to really connect fails the test: these tests send nothing anywhere."""
    def refuse(self):
        raise AssertionError(f"tried to connect to {self.host}")
    monkeypatch.setattr(Connection, "open", refuse)


# --- fingerprints and known_hosts lines ------------------------------------------------------------------

def test_fingerprints_read_like_openssh(tmp_path):
    path = ed25519(tmp_path)
    shown = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", f"{path}.pub"], capture_output=True,
                           text=True, check=True).stdout.split()
    key = public(path)
    assert fingerprint(key) == shown[1] and not fingerprint(key).endswith("=")
    assert f"({key_type(key)})" == shown[-1] == "(ED25519)"
    assert key_type(paramiko.RSAKey.generate(1024)) == "RSA"


def test_known_hosts_names_a_port_other_than_22_in_brackets():
    assert known_hosts_name("10.0.0.2", 22) == "10.0.0.2"
    assert known_hosts_name("10.0.0.2", 2222) == "[10.0.0.2]:2222"


@pytest.mark.parametrize("port", [22, 2222])
def test_first_contact_records_an_openssh_line_and_says_which_key(tmp_path, port):
    key = public(ed25519(tmp_path))
    known = tmp_path / "new" / "known_hosts"
    said = []
    client = paramiko.SSHClient()
    name = known_hosts_name("10.0.0.2", port)
    RecordNewHostKey(known, said.append).missing_host_key(client, name, key)

    assert known.read_text() == f"{name} ssh-ed25519 {key.get_base64()}\n"
    assert stat.S_IMODE(known.stat().st_mode) == 0o600 and stat.S_IMODE(known.parent.stat().st_mode) == 0o700
    where = "10.0.0.2" if port == 22 else "10.0.0.2 port 2222"
    assert said == [f"first connection to {where}: its ED25519 key is {fingerprint(key)}; recorded in {known}"]
    # what was written is what paramiko (and so the next connection) reads back
    assert paramiko.HostKeys(str(known)).lookup(name)["ssh-ed25519"] == key
    assert client.get_host_keys().lookup(name)["ssh-ed25519"] == key


def test_recording_keeps_the_lines_already_there(tmp_path):
    key = public(ed25519(tmp_path))
    known = tmp_path / "known_hosts"
    known.write_text("# mine\n198.51.100.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample")  # no final newline
    os.chmod(known, 0o644)
    remote.record_host_key(known, "10.0.0.2", key)
    assert known.read_text().splitlines()[1:] == ["198.51.100.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample",
                                                  f"10.0.0.2 ssh-ed25519 {key.get_base64()}"]
    assert stat.S_IMODE(known.stat().st_mode) == 0o644  # the user's own file keeps its mode


def test_the_home_directory_is_shown_as_a_tilde(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert remote.shown(tmp_path / ".ssh" / "known_hosts") == "~/.ssh/known_hosts"
    assert remote.shown(Path("/etc/ssh/ssh_known_hosts")) == "/etc/ssh/ssh_known_hosts"


# --- which known_hosts files ------------------------------------------------------------------------------

def test_an_inventory_file_stands_in_for_the_users_files(tmp_path):
    mine = tmp_path / "prod.known_hosts"
    assert KnownHosts.choose(mine, {"userknownhostsfile": "/dev/null"}) == KnownHosts(mine, (mine,))


def test_without_one_ssh_config_and_the_users_file_are_read(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    default = tmp_path / ".ssh" / "known_hosts"
    chosen = KnownHosts.choose(None, {})
    assert chosen.record == default and chosen.read[0] == default
    chosen = KnownHosts.choose(None, {"userknownhostsfile": "~/.ssh/work_hosts ~/.ssh/more"})
    assert chosen.record == tmp_path / ".ssh" / "work_hosts"
    assert chosen.read[:3] == (tmp_path / ".ssh" / "work_hosts", tmp_path / ".ssh" / "more", default)


def test_the_connection_checks_keys_with_gangways_policy_not_fabrics_auto_add(tmp_path):
    key = public(ed25519(tmp_path))
    known = tmp_path / "known_hosts"
    known.write_text(f"[10.0.0.2]:2222 ssh-ed25519 {key.get_base64()}\n")
    connection = Connection("10.0.0.2", port=2222)
    assert isinstance(connection.client._policy, paramiko.AutoAddPolicy)  # what Fabric installs
    KnownHosts.choose(known).apply(connection.client)
    assert isinstance(connection.client._policy, RecordNewHostKey)
    assert connection.client._system_host_keys.lookup("[10.0.0.2]:2222")["ssh-ed25519"] == key


def test_a_changed_key_says_what_it_may_mean_both_fingerprints_and_the_fix(tmp_path):
    old, new = public(ed25519(tmp_path, "old")), public(ed25519(tmp_path, "new"))
    text = changed_key_message("[10.0.0.2]:2222", old, new, tmp_path / "known_hosts")
    assert "10.0.0.2 port 2222 has CHANGED" in text and "nothing was sent" in text
    assert "intercepting" in text and "reinstalled" in text
    assert f"ED25519 {fingerprint(old)}" in text and f"ED25519 {fingerprint(new)}" in text
    assert f"ssh-keygen -R '[10.0.0.2]:2222' -f {tmp_path / 'known_hosts'}" in text


def test_a_changed_key_is_refused_before_logging_in_with_one_message(tmp_path, monkeypatch):
    old, new = public(ed25519(tmp_path, "old")), public(ed25519(tmp_path, "new"))
    known = tmp_path / "known_hosts"
    known.write_text(f"10.0.0.2 ssh-ed25519 {old.get_base64()}\n")

    def open_(self):  # what paramiko's connect does once the server showed its key
        assert self.client._system_host_keys.lookup("10.0.0.2")
        raise paramiko.BadHostKeyException("10.0.0.2", new, old)
    monkeypatch.setattr(Connection, "open", open_)
    with pytest.raises(HostKeyChanged) as raised:
        remote.open_connection(Host("10.0.0.2"), "root", Stats(), known_hosts=known, tell=print)
    assert isinstance(raised.value, RemoteError)
    assert fingerprint(old) in str(raised.value) and f"-f {known}" in str(raised.value)


# --- Fabric's config and ssh_config -----------------------------------------------------------------------

def test_connections_follow_ssh_config_and_fabric_config_but_the_inventory_wins(tmp_path):
    mine, theirs = ed25519(tmp_path, "mine"), ed25519(tmp_path, "theirs")
    ssh_config = SSHConfig.from_text(f"Host web\n  HostName 192.0.2.7\n  Port 2200\n  User admin\n"
                                     f"  IdentityFile {theirs}\n  IdentityFile {tmp_path}/missing\n")
    config = Config(ssh_config=ssh_config, overrides={"connect_kwargs": {"passphrase": "x", "banner_timeout": 5}})
    connection = remote.make_connection(Host("web"), "deploy", mine, config)
    assert (connection.host, connection.port, connection.user) == ("192.0.2.7", 2200, "deploy")
    assert connection.connect_kwargs["key_filename"] == [str(mine), str(theirs)]  # missing ones skipped, as ssh does
    assert connection.connect_kwargs["passphrase"] == "x" and connection.connect_kwargs["banner_timeout"] == 5
    assert connection.connect_kwargs["auth_timeout"] == remote.SLOW_SERVER_TIMEOUT
    assert connection.connect_timeout == remote.CONNECT_TIMEOUT
    assert "key_filename" not in config.connect_kwargs  # Fabric's config is not changed behind its back
    explicit = remote.make_connection(Host("web", port=2201), "deploy", None, config)
    assert explicit.port == 2201


def test_the_known_hosts_file_comes_from_the_inventory_or_fabrics_config(tmp_path, monkeypatch):
    monkeypatch.setattr(targets, "INVENTORY_DIR", tmp_path)
    config = Config(overrides={"gangway": {"known_hosts": str(tmp_path / "cli.known_hosts")}})
    chosen, _ = targets.select(Connection("192.0.2.5", user="root", config=config), None)
    assert chosen.known_hosts == tmp_path / "cli.known_hosts"
    (tmp_path / "staging.yaml").write_text("app: {name: mysite}\nhosts: [{address: 192.0.2.6}]\n"
                                           "known_hosts: keys/staging.known_hosts\n")
    chosen, _ = targets.select(Context(config=config), str(tmp_path / "staging.yaml"))
    assert chosen.known_hosts == tmp_path / "keys" / "staging.known_hosts"


def test_the_inventory_known_hosts_key_is_a_path_relative_to_the_inventory(tmp_path):
    parsed = inventory.parse({"app": {"name": "mysite"}, "known_hosts": "prod.known_hosts"}, "x.yaml", tmp_path)
    assert parsed.known_hosts == tmp_path / "prod.known_hosts"
    assert inventory.parse({"app": {"name": "mysite"}}, "x.yaml", tmp_path).known_hosts is None
    with pytest.raises(InventoryError, match="known_hosts: must be a string"):
        inventory.parse({"app": {"name": "mysite"}, "known_hosts": 3}, "x.yaml", tmp_path)


# --- key files ----------------------------------------------------------------------------------------------

def test_a_usable_key_has_no_problem(tmp_path):
    assert key_file_problem(ed25519(tmp_path)) is None


def test_a_text_file_is_not_a_key(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("my server is 203.0.113.10\n")
    problem = key_file_problem(text)
    assert problem.startswith(f"{text} is not an SSH private key") and "hosts[].key" in problem


def test_a_public_key_given_as_the_private_key_says_so(tmp_path):
    path = ed25519(tmp_path)
    problem = key_file_problem(Path(f"{path}.pub"))
    assert f"{path}.pub is a public key" in problem and "without .pub" in problem


def test_an_encrypted_key_without_an_agent_names_the_fixes(tmp_path, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    path = ed25519(tmp_path, passphrase="secret")
    problem = key_file_problem(path)
    assert "passphrase" in problem and f"ssh-add {path}" in problem and "connect_kwargs.passphrase" in problem
    assert key_file_problem(path, passphrase="secret") is None


def test_a_bad_key_stops_before_connecting(tmp_path, no_network):
    text = tmp_path / "id_ed25519"
    text.write_text("not a key\n")
    with pytest.raises(KeyFileError, match="is not an SSH private key"):
        remote.open_connection(Host("192.0.2.5", key=text), "root", Stats(), known_hosts=tmp_path / "k")


def test_public_keys_names_a_public_key_given_as_the_key(tmp_path):
    path = Path(f"{ed25519(tmp_path)}.pub")
    host = Host("192.0.2.5", key=path)
    with pytest.raises(InventoryError, match=r"is a public key"):
        targets.public_keys(host, for_host(host))


# --- retries ------------------------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now, self.slept = 0.0, []

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def flaky(failures: int, error: Exception, clock: Clock, takes: float = 0.0):
    calls = []

    def attempt():
        calls.append(clock.now)
        clock.now += takes
        if len(calls) <= failures:
            raise error
    return attempt, calls


def test_a_slow_server_is_retried_and_the_user_told_once():
    clock, said = Clock(), []
    attempt, calls = flaky(3, paramiko.SSHException("Error reading SSH protocol banner"), clock)
    assert retrying(attempt, "root@10.0.0.2 port 22", tell=said.append, sleep=clock.sleep,
                    clock=lambda: clock.now) == 4
    assert clock.slept == [1, 2, 3] and len(said) == 1 and "retrying" in said[0] and "banner" in said[0]


def test_retries_are_bounded_in_number():
    clock = Clock()
    attempt, calls = flaky(99, ConnectionRefusedError(111, "Connection refused"), clock)
    with pytest.raises(ConnectionRefusedError):
        retrying(attempt, "x", tell=lambda _: None, sleep=clock.sleep, clock=lambda: clock.now)
    assert len(calls) == len(remote.RETRY_DELAYS) + 1 and clock.now <= remote.RETRY_WINDOW


def test_retries_are_bounded_in_time_when_each_attempt_times_out():
    clock = Clock()
    attempt, calls = flaky(99, socket.timeout("timed out"), clock, takes=15)
    with pytest.raises(socket.timeout):
        retrying(attempt, "x", tell=lambda _: None, sleep=clock.sleep, clock=lambda: clock.now)
    assert len(calls) == 2 and clock.now <= remote.RETRY_WINDOW


@pytest.mark.parametrize("error", [paramiko.AuthenticationException("no"), socket.gaierror(-2, "Name unknown"),
                                   paramiko.BadHostKeyException("h", paramiko.RSAKey.generate(1024),
                                                                paramiko.RSAKey.generate(1024))])
def test_errors_a_retry_cannot_fix_are_not_retried(error):
    clock = Clock()
    attempt, calls = flaky(1, error, clock)
    with pytest.raises(type(error)):
        retrying(attempt, "x", tell=lambda _: None, sleep=clock.sleep, clock=lambda: clock.now)
    assert len(calls) == 1 and clock.slept == []


# --- lost connections ---------------------------------------------------------------------------------------

class FakeChannel:
    """A session channel: the script arrives on its input; it answers with an exit status (-1: a signal)."""

    def __init__(self, transport, exited, drop):
        self.transport, self.exited, self.drop = transport, exited, drop
        self.command, self.stdin = None, b""

    def exec_command(self, command):
        self.command = command

    def sendall(self, data):
        self.stdin += data

    def shutdown_write(self):
        if self.drop:
            self.transport.active = False

    def recv_ready(self):
        return False

    recv_stderr_ready = recv_ready

    def exit_status_ready(self):
        return True

    eof_received = True

    def recv_exit_status(self):
        return self.exited

    def close(self):
        pass


class FakeTransport:
    def __init__(self, active=True):
        self.active = active
        self.channels = []

    def is_active(self):
        return self.active

    def open_session(self):
        self.channels.append(FakeChannel(self, self.owner.exited, self.owner.drop))
        return self.channels[-1]


class FakeConnection:
    """Stands in for Fabric's Connection: its run() would silently reconnect, so it must not be reached."""
    host, user = "10.0.0.2", "deploy"

    def __init__(self, transport, exited=0, drop=False):
        self.client = SimpleNamespace(get_transport=lambda: transport)
        self.transport, self.exited, self.drop = transport, exited, drop
        if transport is not None:
            transport.owner = self

    @property
    def commands(self):
        return [c.stdin for c in self.transport.channels] if self.transport is not None else []

    def run(self, command, **kwargs):
        raise AssertionError("Fabric's run() reconnects silently; Remote opens its own channel")


def test_a_script_travels_on_input_whole_and_is_refused_if_cut_short():
    transport = FakeTransport()
    connection = FakeConnection(transport)
    big = "echo " + "x" * 300_000  # past Linux's 128 KiB limit for one argument
    assert Remote(connection, Stats()).run(big).ok
    channel = transport.channels[0]
    assert big.encode() in channel.stdin and len(channel.command) < 1000 and channel.command.startswith("sudo -n")
    whole = subprocess.run(["sh", "-c", remote.SCRIPT_READER], input="echo one\necho two" +
                           remote.SCRIPT_END, capture_output=True, text=True)
    assert whole.stdout == "one\ntwo\n" and whole.returncode == 0
    cut = subprocess.run(["sh", "-c", remote.SCRIPT_READER], input="echo one\nrm -rf /tmp/gangway-never",
                         capture_output=True, text=True)
    assert cut.returncode == 125 and cut.stdout == "" and "incomplete" in cut.stderr
    stops = subprocess.run(["sh", "-c", remote.SCRIPT_READER], input="set -e\nfalse\necho after" +
                           remote.SCRIPT_END, capture_output=True, text=True)
    assert stops.returncode == 1 and stops.stdout == ""
    reads = subprocess.run(["sh", "-c", remote.SCRIPT_READER], input="cat\necho after" +
                           remote.SCRIPT_END, capture_output=True, text=True)
    assert reads.stdout == "after\n"  # a command that reads its input gets none, not the script's rest


@pytest.mark.parametrize("transport", [None, FakeTransport(active=False)])
def test_a_closed_connection_is_reported_and_never_reopened(transport):
    connection = FakeConnection(transport)
    with pytest.raises(ConnectionLost, match="the connection to 10.0.0.2 was lost while idle") as raised:
        Remote(connection, Stats()).run("true")
    assert connection.commands == [] and isinstance(raised.value, RemoteError)


def test_a_connection_lost_during_a_command_is_called_that():
    connection = FakeConnection(FakeTransport(), exited=-1, drop=True)
    with pytest.raises(ConnectionLost, match="lost while running a command; the server may have finished or "
                                             "stopped it"):
        Remote(connection, Stats()).run("sleep 60")


def test_a_command_ended_by_a_signal_on_a_live_connection_is_a_failure_not_a_lost_connection():
    result = Remote(FakeConnection(FakeTransport(), exited=-1), Stats()).run("kill -9 $$")
    assert not result.ok and "signal" in result.stderr


# --- a real SSH handshake, on loopback: a paramiko server that accepts any key ----------------------------

class AnyKey(paramiko.ServerInterface):
    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        return paramiko.AUTH_SUCCESSFUL


class LoopbackServer:
    """An SSH server on 127.0.0.1 with a host key of its own; the first `hang_up` connections are closed before
    the SSH banner, like a server still starting."""

    def __init__(self, host_key: paramiko.PKey, hang_up: int = 0):
        self.host_key, self.hang_up = host_key, hang_up
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted, self.transports = 0, []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.hang_up:
                sock.close()
                continue
            transport = paramiko.Transport(sock)
            transport.add_server_key(self.host_key)
            self.transports.append(transport)
            try:
                transport.start_server(server=AnyKey())
            except (paramiko.SSHException, EOFError):
                pass

    def close(self):
        # Wake the accept() and wait for the thread before closing: a closed listener's number is reused by the
        # next test's listener, and a thread still about to accept would take that test's connections.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(5)
        self.listener.close()
        for transport in self.transports:
            transport.close()


@pytest.fixture
def loopback(tmp_path):
    servers = []

    def start(host_key=None, hang_up=0):
        server = LoopbackServer(host_key or paramiko.Ed25519Key.from_private_key_file(str(ed25519(tmp_path, "hk"))),
                                hang_up)
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.close()


def connect(server, tmp_path, said, known):
    key = tmp_path / "client"
    if not key.exists():
        ed25519(tmp_path, "client")
    connection = remote.open_connection(Host("127.0.0.1", port=server.port, key=key), "deploy", Stats(),
                                        known_hosts=known, tell=said.append, sleep=lambda s: None)
    connection.close()


def test_first_contact_then_checked_then_a_changed_key_refused_over_real_ssh(loopback, tmp_path, capfd):
    known, said = tmp_path / "known_hosts", []
    first = loopback()
    connect(first, tmp_path, said, known)
    name = f"[127.0.0.1]:{first.port}"
    assert said == [f"first connection to 127.0.0.1 port {first.port}: its ED25519 key is "
                    f"{fingerprint(first.host_key)}; recorded in {known}"]
    assert known.read_text() == f"{name} ssh-ed25519 {first.host_key.get_base64()}\n"

    connect(first, tmp_path, said, known)
    assert len(said) == 1  # known now: checked, nothing to say

    first.close()
    second = LoopbackServer(paramiko.Ed25519Key.from_private_key_file(str(ed25519(tmp_path, "hk2"))))
    try:
        known.write_text(known.read_text().replace(name, f"[127.0.0.1]:{second.port}"))
        with pytest.raises(HostKeyChanged) as raised:
            connect(second, tmp_path, said, known)
        assert fingerprint(first.host_key) in str(raised.value) and fingerprint(second.host_key) in str(raised.value)
        assert second.transports and not second.transports[0].is_authenticated()  # refused before logging in
    finally:
        second.close()
    assert "Traceback" not in capfd.readouterr().err


def test_a_server_that_hangs_up_before_its_banner_is_retried_quietly(loopback, tmp_path, capfd):
    known, said = tmp_path / "known_hosts", []
    server = loopback(hang_up=2)
    connect(server, tmp_path, said, known)
    assert server.accepted == 3 and len(said) == 2
    assert "retrying" in said[0] and said[1].startswith("first connection")
    assert capfd.readouterr().err == ""  # no paramiko log lines or tracebacks


def test_a_server_that_keeps_hanging_up_is_one_clear_line_after_the_retries(loopback, tmp_path):
    server = loopback(hang_up=99)
    with pytest.raises(RemoteError) as raised:
        connect(server, tmp_path, [], tmp_path / "known_hosts")
    assert server.accepted == len(remote.RETRY_DELAYS) + 1
    message = str(raised.value)
    assert message.startswith(f"deploy@127.0.0.1 port {server.port}: ") and "5 attempts" in message
    assert "\n" not in message


def test_a_broken_identity_file_from_ssh_config_is_skipped_not_fatal(tmp_path, no_network):
    broken = tmp_path / "old_key"
    broken.write_text("not a key\n")
    good = ed25519(tmp_path)
    config = Config(ssh_config=SSHConfig.from_text(f"Host *\n  IdentityFile {broken}\n"))
    with pytest.raises(AssertionError, match="tried to connect"):  # got as far as connecting
        remote.open_connection(Host("192.0.2.5", key=good), "root", Stats(), config=config,
                               known_hosts=tmp_path / "k")


def test_a_key_of_another_type_says_the_server_may_have_stopped_offering_the_old_one(tmp_path):
    old, new = paramiko.ECDSAKey.generate(), public(ed25519(tmp_path))
    text = changed_key_message("10.0.0.2", old, new, tmp_path / "known_hosts")
    assert "no longer offers its ECDSA key" in text and f"ECDSA {fingerprint(old)}" in text
    assert "ssh_host_ed25519_key.pub" in text


def test_a_public_key_file_that_is_not_one_plain_key_line_is_refused(tmp_path):
    """The .pub next to the key goes into authorized_keys: options or a second line would go in with it."""
    from tasks.inventory import InventoryError, parse
    from tasks.connection.targets import public_keys

    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    inventory = parse({"app": {"name": "m"}, "hosts": [{"address": "192.0.2.9", "key": str(key)}]}, "x", tmp_path)
    assert public_keys(inventory.hosts[0], inventory)[0].startswith("ssh-ed25519 ")
    (tmp_path / "id_ed25519.pub").write_text('command="touch /tmp/x" ' + (tmp_path / "id_ed25519.pub").read_text())
    with pytest.raises(InventoryError, match="id_ed25519.pub"):
        public_keys(inventory.hosts[0], inventory)


class LateOutputChannel(FakeChannel):
    """sshd's order on a busy server: the exit status first, then the output it still read from the program's
    pipes, then the end of the output."""

    def __init__(self, transport, exited, drop, chunks, eof=True):
        super().__init__(transport, exited, drop)
        self.chunks, self.eof, self.polls = list(chunks), eof, 0
        self._wake_r, wake_w = os.pipe()
        os.write(wake_w, b"x")  # always readable: the wait between polls returns at once
        os.close(wake_w)

    def fileno(self):
        return self._wake_r

    def recv_ready(self):
        self.polls += 1
        return self.polls > 3 and bool(self.chunks)  # nothing for the first polls, as if still in flight

    def recv(self, size):
        return self.chunks.pop(0)

    @property
    def eof_received(self):
        return self.eof and not self.chunks

    def close(self):
        os.close(self._wake_r)


def test_output_that_arrives_after_the_exit_status_is_still_read():
    transport = FakeTransport()
    connection = FakeConnection(transport)
    transport.open_session = lambda: transport.channels.append(
        LateOutputChannel(transport, 0, False, [b"first\n", b"last\n"])) or transport.channels[-1]
    result = Remote(connection, Stats()).run("printf 'first\\nlast\\n'")
    assert result.ok and result.stdout == "first\nlast\n"


def test_a_pipe_held_open_after_the_exit_does_not_hang_the_run(monkeypatch):
    monkeypatch.setattr(remote, "OUTPUT_AFTER_EXIT_S", 0.05)
    transport = FakeTransport()
    connection = FakeConnection(transport)
    transport.open_session = lambda: transport.channels.append(
        LateOutputChannel(transport, 0, False, [], eof=False)) or transport.channels[-1]
    assert Remote(connection, Stats()).run("sleep 60 & echo started").ok
