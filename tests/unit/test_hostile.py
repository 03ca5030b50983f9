"""Every value from the inventory, the operator or the project is hostile until quoted.

Two walls, both tested here with the same payloads:
1. the inventory refuses a value that is not what its key really is, naming the key and the fix;
2. whatever gets past it (or never went through it) is quoted: the generated shell commands are *run* here,
   with sh, in a temporary directory, and the canary file a payload would create never appears, while the
   literal value arrives intact where it belongs (a file's content, a program's argument, a variable).
Commands that need the server's programs (runuser, psql, certbot, apt-get) find small stand-ins first on
PATH, which record the arguments and environment they were called with.
"""

from __future__ import annotations

import base64
import copy
import grp
import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from tasks.commands import shell
from tasks.inventory import Acme, App, Host, Inventory, InventoryError, Proxy, parse
from tasks.provisioning import Server, postgres, steps as provisioning_steps, tls
from tasks.commands.render import UnsafeValue, render
from tasks.facts.steps import Absent, Directory, File, Link, Packages, Step
from tests.unit.shellcheck import assert_shellcheck_clean

# `CANARY` is replaced by the path of a file that must never exist.
PAYLOADS = [
    "$(touch CANARY)",
    "`touch CANARY`",
    '"; touch CANARY; "',
    "'; touch CANARY; '",
    "'$(touch CANARY)'",
    "; touch CANARY",
    "\ntouch CANARY\n",
    "\rtouch CANARY",
    "| touch CANARY",
    "&& touch CANARY",
    "${IFS}touch${IFS}CANARY",
    "$(touch${IFS}CANARY)",
    "\\$(touch CANARY)",
    "\uff04(touch${IFS}CANARY)",  # a full-width dollar sign
    "\u2028touch CANARY",  # a Unicode line separator
    "\u202e$(touch CANARY)",  # a right-to-left override
    "%n%s%%",
]
CONTROL = [p for p in PAYLOADS if any(c in p for c in "\n\r\u2028\u202e")]


def ids(values):
    return [repr(v)[:40] for v in values]


# --- 1. the inventory refuses them ---------------------------------------------------------------------------

GOOD = {
    "app": {"name": "mysite", "domains": ["example.com"], "health_check": "/healthz/"},
    "hosts": [{"address": "203.0.113.10", "user": "root"}],
    "acme": {"email": "admin@example.com", "directory": "https://acme.example.com/dir"},
    "proxy": {"url": "http://proxy.internal:3128", "no_proxy": ["10.0.0.5"]},
    "deploy_user": "deploy",
}


def _key_line(comment="alice@laptop"):
    blob = (11).to_bytes(4, "big") + b"ssh-ed25519" + (32).to_bytes(4, "big") + bytes(range(32))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


# (where the value goes, the message names it as, how a payload is worked into an otherwise good value)
STRICT_KEYS = [
    (("app", "name"), "app.name", lambda p: "mysite" + p),
    (("app", "domains", 0), "app.domains[0]", lambda p: "www" + p + ".example.com"),
    (("app", "wsgi_module"), "app.wsgi_module", lambda p: "mysite.wsgi" + p),
    (("app", "requirements"), "app.requirements", lambda p: "requirements" + p + ".txt"),
    (("app", "health_check"), "app.health_check", lambda p: "/healthz/?x=" + p),
    (("hosts", 0, "address"), "hosts[0].address", lambda p: "203.0.113.10" + p),
    (("hosts", 0, "user"), "hosts[0].user", lambda p: "root" + p),
    (("acme", "email"), "acme.email", lambda p: "admin" + p + "@example.com"),
    (("acme", "directory"), "acme.directory", lambda p: "https://acme.example.com/dir" + p),
    (("proxy", "url"), "proxy.url", lambda p: "http://proxy.internal:3128" + p),
    (("proxy", "url"), "proxy.url", lambda p: "http://user:" + p + "@proxy.internal:3128"),
    (("proxy", "no_proxy", 0), "proxy.no_proxy[0]", lambda p: "internal" + p + ".example.com"),
    (("deploy_user",), "deploy_user", lambda p: "deploy" + p),
    (("ssh_keys", 0), "ssh_keys[0]", lambda p: "ssh-ed25519" + p + " AAAAC3NzaC1lZDI1NTE5"),
]
# Local file names may hold any character but a line break: they never reach a shell (only argv, here).
# An ssh key's comment is free text, written into authorized_keys by content (see below), never by a shell.
LENIENT_KEYS = [
    (("app", "source"), "app.source", lambda p: "project" + p),
    (("hosts", 0, "key"), "hosts[0].key", lambda p: "id_ed25519" + p),
    (("acme", "ca_bundle"), "acme.ca_bundle", lambda p: "ca" + p + ".pem"),
    (("known_hosts",), "known_hosts", lambda p: "production" + p + ".known_hosts"),
    (("ssh_keys", 0), "ssh_keys[0]", lambda p: _key_line("alice" + p)),
]


def _set(where, value):
    data = copy.deepcopy(GOOD)
    data.setdefault("ssh_keys", [_key_line()])
    node = data
    for part in where[:-1]:
        node = node[part]
    node[where[-1]] = value
    return data


def _refusal(data) -> str:
    with pytest.raises(InventoryError) as caught:
        parse(data, "inventory/test.yaml", Path("."))
    return str(caught.value)


@pytest.mark.parametrize("payload", PAYLOADS, ids=ids(PAYLOADS))
@pytest.mark.parametrize("where, name, wrap", STRICT_KEYS, ids=[f"{k[1]}-{i}" for i, k in enumerate(STRICT_KEYS)])
def test_every_key_refuses_every_payload_naming_the_key(where, name, wrap, payload, tmp_path):
    message = _refusal(_set(where, wrap(payload.replace("CANARY", str(tmp_path / "pwned")))))
    assert message.startswith(f"inventory/test.yaml: {name}: "), message
    assert "\n" not in message and "\r" not in message and "\u2028" not in message, message
    assert any(fix in message for fix in ("e.g.", "use ", "write it on one line")), f"no fix in: {message}"


@pytest.mark.parametrize("payload", CONTROL, ids=ids(CONTROL))
@pytest.mark.parametrize("where, name, wrap", LENIENT_KEYS, ids=[k[1] for k in LENIENT_KEYS])
def test_paths_and_key_comments_refuse_line_breaks_and_control_characters(where, name, wrap, payload):
    message = _refusal(_set(where, wrap(payload)))
    assert message.startswith(f"inventory/test.yaml: {name}: "), message
    assert "line break" in message or "control character" in message, message
    assert "\n" not in message and "\u2028" not in message


def test_the_shipped_example_and_a_good_inventory_still_parse():
    inv = parse(_set(("ssh_keys", 0), _key_line("Alice $(not run) `ok`")), "inventory/test.yaml", Path("."))
    assert inv.app.health_check == "/healthz/" and inv.proxy.url == "http://proxy.internal:3128"


# --- 2. what gets through is quoted: run the commands ----------------------------------------------------------

STUB = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["GW_CALLS"], "a") as log:
    log.write(json.dumps({"argv": sys.argv, "env": dict(os.environ)}) + "\\n")
if os.path.basename(sys.argv[0]) == "runuser":  # runuser -u USER -- COMMAND...: run COMMAND as ourselves
    os.execvp(sys.argv[4], sys.argv[4:])
"""


class Sandbox:
    """A temporary directory to run generated commands in, with recording stand-ins for server programs."""

    def __init__(self, root: Path):
        self.root = root
        self.canary = root / "pwned"
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log = root / "calls.jsonl"
        for name in ("runuser", "psql", "createuser", "createdb", "systemctl", "certbot", "apt-get",
                     "dpkg-query", "openssl"):
            (self.bin / name).write_text(STUB)
            (self.bin / name).chmod(0o755)
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.group = grp.getgrgid(os.getgid()).gr_name

    def payload(self, raw: str, relative: bool = False) -> str:
        """The payload aimed at the canary; `relative` for use inside a file name (no slash allowed)."""
        return raw.replace("CANARY", self.canary.name if relative else str(self.canary))

    def run(self, script: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}", "GW_CALLS": str(self.log)}
        result = subprocess.run(["sh", "-c", script], cwd=self.root, env=env, capture_output=True, text=True,
                                timeout=30)
        assert not self.canary.exists(), f"a payload ran:\n{script}"
        assert not Path("/pwned").exists()
        if check:
            assert result.returncode == 0, f"{result.stderr}\n--- script:\n{script}"
        return result

    def calls(self, program: str) -> list[dict]:
        if not self.log.exists():
            return []
        entries = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [e for e in entries if os.path.basename(e["argv"][0]) == program]

    def facts(self, step: Step) -> dict:
        """Run the step's probes here, as the runner would on the server."""
        out = {}
        for probe in step.probes():
            result = self.run(probe.command, check=False)
            out[probe.key] = probe.parse(result.stdout, result.returncode)
        return out


@pytest.fixture
def sandbox(tmp_path):
    return Sandbox(tmp_path)


@pytest.mark.parametrize("raw", PAYLOADS, ids=ids(PAYLOADS))
def test_shell_builders_keep_payloads_literal(sandbox, raw):
    relative, absolute = sandbox.payload(raw, relative=True), sandbox.payload(raw)
    path = sandbox.root / f"file {relative}"
    sandbox.run(shell.write_file(str(path), absolute, "640", sandbox.user, sandbox.group))
    assert path.read_bytes().decode() == absolute and oct(path.stat().st_mode)[-3:] == "640"

    directory = sandbox.root / f"dir {relative}"
    sandbox.run(shell.ensure_directory(str(directory), "750", sandbox.user, sandbox.group))
    assert directory.is_dir()

    link = sandbox.root / f"link {relative}"
    sandbox.run(shell.symlink(str(link), absolute))
    assert os.readlink(link) == absolute

    sandbox.run(shell.with_env({"GW_VALUE": absolute, "http_proxy": absolute},
                               'printf %s "$GW_VALUE" > env.out'))
    assert (sandbox.root / "env.out").read_bytes().decode() == absolute

    sandbox.run(shell.as_user(sandbox.user, shell.with_env({"GW_VALUE": absolute},
                                                           'printf %s "$GW_VALUE" > user.out')))
    assert (sandbox.root / "user.out").read_bytes().decode() == absolute
    sandbox.run(shell.as_user(absolute, "true"))
    assert sandbox.calls("runuser")[-1]["argv"][1:4] == ["-u", absolute, "--"]

    sandbox.run(shell.join("printf", "%s", absolute) + " > join.out")
    assert (sandbox.root / "join.out").read_bytes().decode() == absolute


@pytest.mark.parametrize("raw", PAYLOADS, ids=ids(PAYLOADS))
def test_step_operations_keep_payloads_literal(sandbox, raw):
    """Probes, then the plan's script, for files, directories, links, removals and packages."""
    relative, absolute = sandbox.payload(raw, relative=True), sandbox.payload(raw)
    me, group = sandbox.user, sandbox.group
    gone = sandbox.root / f"old {relative}"
    gone.write_text("to remove")
    step = Step("hostile", [
        File(str(sandbox.root / f"conf {relative}"), absolute, "600", me, group),
        Directory(str(sandbox.root / f"dir {relative}"), "700", me, group),
        Link(str(sandbox.root / f"link {relative}"), absolute),
        Absent(str(gone), why=absolute),
        Packages(["nginx", f"pkg{absolute}"], env={"http_proxy": absolute}),
    ], after=["true"])
    plan = step.plan(sandbox.facts(step))
    assert len(plan.changes) == 5
    sandbox.run(plan.script)
    assert (sandbox.root / f"conf {relative}").read_bytes().decode() == absolute
    assert (sandbox.root / f"dir {relative}").is_dir()
    assert os.readlink(sandbox.root / f"link {relative}") == absolute
    assert not gone.exists()
    install = [c for c in sandbox.calls("apt-get") if "install" in c["argv"]]
    assert install[-1]["argv"][-2:] == ["nginx", f"pkg{absolute}"]
    assert install[-1]["env"]["http_proxy"] == absolute
    # A second look finds nothing to do: the probes read the hostile names back as they were written.
    # (Not for a link whose target has a line break: readlink's output is read line by line. Harmless,
    # the link is rewritten each time, and the inventory refuses line breaks anyway.)
    again = step.plan(sandbox.facts(step))
    unchanged = [c.what for c in again.changes if "installed" not in c.what]
    assert unchanged == ([] if absolute.isprintable() else [unchanged[0]] if unchanged else []), unchanged
    assert all("->" in what for what in unchanged)


@pytest.mark.parametrize("raw", PAYLOADS[:8], ids=ids(PAYLOADS[:8]))
def test_a_rejected_validation_restores_hostile_names(sandbox, raw):
    relative = sandbox.payload(raw, relative=True)
    conf = sandbox.root / f"site {relative}"
    conf.write_text("working\n")
    step = Step("site", [File(str(conf), "broken\n", owner=sandbox.user, group=sandbox.group)], validate="false")
    result = sandbox.run(step.plan(sandbox.facts(step)).script, check=False)
    assert result.returncode != 0 and conf.read_text() == "working\n"


def hostile_server(value: str, tls_on: bool = True) -> Server:
    """A Server whose inventory never went through validation: every field carries `value`."""
    inv = Inventory(app=App(name=value, domains=(f"a{value}", "b.example.com") if tls_on else (),
                            health_check=value, requirements=value),
                    hosts=(Host(address=value, user=value),),
                    acme=Acme(email=value, directory=value, ca_bundle=Path(__file__)),
                    proxy=Proxy(url=value, no_proxy=(value,)), deploy_user=value, ssh_keys=(value,))
    return Server(inv, inv.hosts[0], (value,), lambda: None)


@pytest.mark.parametrize("raw", PAYLOADS, ids=ids(PAYLOADS))
def test_postgres_commands_pass_the_app_name_as_one_argument(sandbox, raw):
    app = sandbox.payload(raw)
    probe = postgres.state_probe(app)
    sandbox.run(probe.command)
    [psql] = sandbox.calls("psql")
    sql = psql["argv"][-1]
    assert psql["argv"][1:-1] == ["-X", "-q", "-t", "-A", "-c"]
    assert f"rolname = '{app.replace(chr(39), chr(39) * 2)}'" in sql  # a SQL literal, quotes doubled
    for change in postgres.changes(app)(None, {}):
        for command in change.commands:
            sandbox.run(command)
    assert sandbox.calls("createuser")[-1]["argv"][1:] == [app]
    assert sandbox.calls("createdb")[-1]["argv"][1:] == ["--owner", app, app]


@pytest.mark.parametrize("raw", PAYLOADS, ids=ids(PAYLOADS))
def test_certbot_gets_each_value_as_one_argument_and_the_proxy_in_its_environment(sandbox, raw):
    value = sandbox.payload(raw)
    server = hostile_server(value)
    sandbox.run(tls.certbot_command(server, force=True))
    [call] = sandbox.calls("certbot")
    argv = call["argv"]
    assert argv[argv.index("--email") + 1] == value and argv[argv.index("--server") + 1] == value
    assert argv[argv.index("--cert-name") + 1] == value
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--domain"] == [f"a{value}", "b.example.com"]
    assert argv[argv.index("--deploy-hook") + 1] == "systemctl reload nginx"
    assert call["env"]["https_proxy"] == value and call["env"]["no_proxy"] == value
    sandbox.run(tls.certificate_probe(server).command, check=False)


# --- templates ---------------------------------------------------------------------------------------------------

def _systemd_unquote(word: str) -> str:
    """How systemd reads one double-quoted word of Environment=: C escapes, and %% for a literal %."""
    assert word.startswith('"') and word.endswith('"') and len(word) >= 2, word
    out, i, body = [], 0, word[1:-1]
    while i < len(body):
        char = body[i]
        if char == "\\":
            assert body[i + 1] in '\\"', f"unexpected escape in {word}"
            out.append(body[i + 1])
            i += 2
        elif char == "%":
            assert body[i + 1] == "%", f"an unescaped %-specifier in {word}"
            out.append("%")
            i += 2
        else:
            assert char != '"', f"an unescaped quote ends the word early: {word}"
            out.append(char)
            i += 1
    return "".join(out)


@pytest.mark.parametrize("raw", PAYLOADS, ids=ids(PAYLOADS))
def test_the_certbot_renewal_drop_in_quotes_for_systemd_or_refuses(raw, tmp_path):
    value = raw.replace("CANARY", str(tmp_path / "pwned"))
    environment = {"https_proxy": value, "REQUESTS_CA_BUNDLE": "/etc/gangway/acme-ca.pem"}
    if value in CONTROL or any(c in value for c in "\n\r\u2028\u202e"):
        with pytest.raises(UnsafeValue, match="renewal-environment"):
            render("certbot/renewal-environment.conf.j2", environment=environment)
        return
    conf = render("certbot/renewal-environment.conf.j2", environment=environment)
    lines = [line for line in conf.splitlines() if line.startswith("Environment=")]
    read = dict(_systemd_unquote(line[len("Environment="):]).split("=", 1) for line in lines)
    assert read == environment


def test_the_renewal_drop_in_refuses_a_bad_variable_name():
    with pytest.raises(UnsafeValue, match="environment variable name"):
        render("certbot/renewal-environment.conf.j2", environment={"A B": "x"})


@pytest.mark.parametrize("raw", PAYLOADS + ['http://proxy:3128"', "http://proxy:3128\\"],
                         ids=ids(PAYLOADS + ["quote", "backslash"]))
def test_the_apt_proxy_file_holds_the_literal_url_or_refuses(raw, tmp_path):
    url = raw.replace("CANARY", str(tmp_path / "pwned"))
    if any(c in url for c in '"\\\n\r\u2028\u202e'):
        with pytest.raises(UnsafeValue, match="apt/proxy.conf"):
            render("apt/proxy.conf.j2", url=url)
        return
    conf = tmp_path / "apt.conf"
    conf.write_text(render("apt/proxy.conf.j2", url=url))
    if not shutil.which("apt-config"):
        pytest.skip("apt-config (Debian's apt) is not here to read the file back")
    for scope in ("http", "https"):
        out = subprocess.run(["apt-config", "shell", "V", f"Acquire::{scope}::Proxy"], capture_output=True,
                             text=True, env={**os.environ, "APT_CONFIG": str(conf)}, check=True).stdout
        env = subprocess.run(["sh", "-c", f'{out}\nprintf %s "$V"'], capture_output=True, text=True, check=True)
        assert env.stdout == url


# --- 3. shellcheck on what provisioning generates ------------------------------------------------------------------

def test_step_scripts_with_every_operation_kind_are_shellcheck_clean(sandbox):
    for validate in (None, "nginx -t"):
        step = Step("all kinds", [
            File("/etc/x.conf", "a\n"), Directory("/srv/x", "750", "app", "app"), Link("/etc/l", "/etc/x.conf"),
            Absent("/etc/old"), Packages(["nginx", "curl"], env={"http_proxy": "http://p:3128"}),
        ], validate=validate, after=["systemctl reload nginx"])
        facts = {"path:/etc/x.conf": None, "path:/srv/x": None, "path:/etc/l": None, "packages": set(),
                 "path:/etc/old": step.operations[3].probes()[0].parse("regular file|644|root|root\nab\n", 0)}
        assert_shellcheck_clean(step.plan(facts).script)


@pytest.mark.parametrize("raw", PAYLOADS, ids=ids(PAYLOADS))
def test_step_scripts_with_hostile_values_are_shellcheck_clean(raw):
    value = raw.replace("CANARY", "/tmp/pwned")
    step = Step("hostile", [File(f"/etc/{value}", value), Directory(f"/srv/{value}"), Link(f"/l{value}", value),
                            Packages([value], env={"http_proxy": value})], validate="true")
    facts = {p.key: p.parse("", 1) for p in step.probes()}
    # SC2016 ("expressions don't expand in single quotes") is the point here: the payload's $ stays literal.
    assert_shellcheck_clean(step.plan(facts).script, exclude=("SC2016",))


def provisioning_server(proxy: bool = True) -> Server:
    data = {"app": {"name": "mysite", "domains": ["app.test", "www.app.test"]}, "hosts": [{"address": "10.0.0.2"}],
            "acme": {"email": "admin@app.test", "ca_bundle": __file__}}
    if proxy:
        data["proxy"] = {"url": "http://proxy.internal:3128", "no_proxy": ["10.0.0.1"]}
    inv = parse(data, "inventory/test.yaml", Path("."))
    return Server(inv, inv.hosts[0], (_key_line(),), lambda: None)


# These probes print several words on one line through unquoted $(...): the word splitting is the point.
PROBE_EXCLUDES = {"memory": ("SC2046",), "fail2ban": ("SC2046",)}


@pytest.mark.parametrize("proxy", [True, False], ids=["proxy", "direct"])
def test_every_provisioning_script_and_probe_is_shellcheck_clean(proxy):
    checked = 0
    for step in provisioning_steps(provisioning_server(proxy)):
        probes = step.probes()
        for probe in probes:
            assert_shellcheck_clean(probe.command, exclude=PROBE_EXCLUDES.get(probe.key, ()))
        # A fresh server: every probe failed, every file is absent, so every change is planned.
        facts = {p.key: p.parse("", 1) for p in probes}
        if "memory" in facts:
            facts["memory"] = {"memory_mib": 512, "swaps": 0, "container": False}
        plan = step.plan(facts)
        if plan.script:
            assert_shellcheck_clean(plan.script)
            checked += 1
        for command in (step.validate, step.undo):
            if command:
                assert_shellcheck_clean(command)
    assert checked >= 10


def test_the_helper_reports_findings_with_their_lines():
    with pytest.raises(AssertionError, match=r"SC2086.*\n.*rm -rf \$dir"):
        assert_shellcheck_clean("dir=$1\nrm -rf $dir\n")
    assert_shellcheck_clean('dir=$1\nrm -rf "$dir"\n')
    assert_shellcheck_clean("echo $(date) $(id -u)\n", exclude=("SC2046",))


NGINX_SYNTAX = [p for p in PAYLOADS if p != "%n%s%%"] + ["a b", "x;", "{", "}", "#x", "$host"]  # % is plain text


@pytest.mark.parametrize("raw", NGINX_SYNTAX, ids=ids(NGINX_SYNTAX))
def test_the_nginx_filter_refuses_anything_nginx_would_read_as_syntax(raw):
    from tasks.commands.render import nginx_value
    with pytest.raises(UnsafeValue):
        nginx_value(raw.replace("CANARY", "/tmp/pwned"))


def test_the_filters_pass_ordinary_values_through():
    from tasks.commands.render import apt_quote, nginx_value, systemd_quote
    assert nginx_value("www.example.com") == "www.example.com" and nginx_value("/srv/my_site/current") \
        == "/srv/my_site/current"
    assert apt_quote("http://proxy:3128") == '"http://proxy:3128"'
    assert systemd_quote('a "b" \\ 100%') == '"a \\"b\\" \\\\ 100%%"'
