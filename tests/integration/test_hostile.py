"""Hostile inventory values against a real provisioned server: `fab provision` and `fab deploy` refuse each one
before connecting, with one line naming the key, and the payload never runs on the server. Then the escaping
of the two files that carry free-form values (apt's proxy file, certbot's systemd drop-in) is read back by the
server's own apt and systemd."""

from __future__ import annotations

import base64
import shlex
import time
from pathlib import Path

import pytest
import yaml

from tasks.commands.render import render
from tests.integration.inventory import write_inventory
from tests.integration.conftest import APP, DOMAINS, fab

CANARY = "/tmp/gangway-hostile"


def _key_line(comment: str) -> str:
    blob = (11).to_bytes(4, "big") + b"ssh-ed25519" + (32).to_bytes(4, "big") + bytes(range(32))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


# (the key the message must name, where it goes in the YAML, the hostile value)
CASES = [
    ("app.health_check", ("app", "health_check"), f"/healthz/?x=$(touch${{IFS}}{CANARY})"),
    ("app.health_check", ("app", "health_check"), f"/healthz/\"; touch {CANARY}; \""),
    ("acme.email", ("acme", "email"), f"admin@app.test\nAPT::Update::Pre-Invoke {{\"touch {CANARY}\";}};"),
    ("acme.directory", ("acme", "directory"), f"https://acme.test/dir`touch {CANARY}`"),
    ("proxy.url", ("proxy", "url"), f"http://proxy.test:3128\";\nAPT::Update::Pre-Invoke {{\"touch {CANARY}\";}};"),
    ("proxy.url", ("proxy", "url"), f"http://proxy.test:3128'$(touch {CANARY})'"),
    ("proxy.no_proxy[0]", ("proxy", "no_proxy", 0), f"10.0.0.1,$(touch {CANARY})"),
    ("ssh_keys[0]", ("ssh_keys",), [_key_line("me") + f"\ncommand=\"touch {CANARY}\" " + _key_line("x")]),
    ("deploy_user", ("deploy_user",), f"deploy;touch {CANARY}"),
    ("app.name", ("app", "name"), f"mysite$(touch {CANARY})"),
    ("app.domains[0]", ("app", "domains", 0), f"app.test\n$(touch {CANARY})"),
    ("app.wsgi_module", ("app", "wsgi_module"), f"mysite.wsgi;touch {CANARY}"),
    ("app.requirements", ("app", "requirements"), f"requirements.txt;touch {CANARY}"),
    ("hosts[0].address", ("hosts", 0, "address"), f"{{address}}%$(touch {CANARY})"),
]


def _hostile_inventory(trixie, directory: Path, where: tuple, value) -> Path:
    path = directory / "hostile.yaml"
    write_inventory(trixie.host, path, app=APP, domains=DOMAINS)
    data = yaml.safe_load(path.read_text())
    node = data
    for part in where[:-1]:
        node = node[part]
    if isinstance(value, str):
        value = value.replace("{address}", trixie.host.address)
    node[where[-1]] = value
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


@pytest.mark.parametrize("key, where, value", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_a_hostile_value_is_refused_before_connecting_and_never_runs(trixie, tmp_path, key, where, value):
    trixie.root(f"rm -f {CANARY}")
    inventory = _hostile_inventory(trixie, tmp_path, where, value)
    for task in ("provision", "deploy"):
        started = time.monotonic()
        out = fab(task, "--inventory", str(inventory), check=False, timeout=60)
        elapsed = time.monotonic() - started
        assert out.returncode == 1, f"fab {task} accepted {key}={value!r}:\n{out.stdout}\n{out.stderr}"
        assert f"hostile.yaml: {key}: " in out.stderr, out.stderr
        message = [line for line in out.stderr.splitlines() if f"{key}: " in line]
        assert len(message) == 1 and "Traceback" not in out.stderr, out.stderr
        # Refused while reading the inventory: no step ran, no SSH connection was opened.
        assert "recap" not in out.stdout and "changed" not in out.stdout, out.stdout
        assert elapsed < 15, f"fab {task} took {elapsed:.1f} s to refuse: did it connect?"
    assert trixie.root(f"test -e {CANARY}").returncode == 1, "a payload ran on the server"


def _put(trixie, path: str, content: str) -> None:
    encoded = base64.b64encode(content.encode()).decode()
    result = trixie.root(f"printf %s {encoded} | base64 -d > {shlex.quote(path)}")
    assert result.returncode == 0, result.stderr


# Nothing here is refused by the templates (no line break), so it must arrive as written.
AWKWARD = f"http://u:p%40ss@proxy.test:3128/ \"quoted\" back\\slash 100% $(touch {CANARY}) `id` ${{HOME}} ;|&"


def test_systemd_reads_the_certbot_drop_in_values_back_as_written(trixie):
    unit = "gangway-quote-test"
    drop_in = render("certbot/renewal-environment.conf.j2",
                     environment={"https_proxy": AWKWARD, "REQUESTS_CA_BUNDLE": "/etc/gangway/ca 100%.pem"})
    try:
        _put(trixie, f"/run/systemd/system/{unit}.service",
             "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'printenv https_proxy REQUESTS_CA_BUNDLE "
             f"> /run/{unit}.out'\n")
        trixie.root(f"mkdir -p /run/systemd/system/{unit}.service.d")
        _put(trixie, f"/run/systemd/system/{unit}.service.d/gangway.conf", drop_in)
        result = trixie.root(f"systemctl daemon-reload && systemctl start {unit} && cat /run/{unit}.out")
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{AWKWARD}\n/etc/gangway/ca 100%.pem\n"
    finally:
        trixie.root(f"rm -rf /run/systemd/system/{unit}.service /run/systemd/system/{unit}.service.d "
                    f"/run/{unit}.out; systemctl daemon-reload")
    assert trixie.root(f"test -e {CANARY}").returncode == 1


def test_apt_reads_the_proxy_file_back_as_written(trixie):
    url = AWKWARD.replace('"', "").replace("\\", "")  # apt's quoted values cannot hold these: refused earlier
    # Read first (APT_CONFIG), so the server's own apt.conf.d, with the real proxy, is left out.
    isolate = 'Dir::Etc::Parts "/nonexistent"; Dir::Etc::Main "/nonexistent";\n'
    _put(trixie, "/tmp/gangway-apt-quote.conf", isolate + render("apt/proxy.conf.j2", url=url))
    try:
        result = trixie.root("APT_CONFIG=/tmp/gangway-apt-quote.conf apt-config shell V Acquire::https::Proxy "
                             "> /tmp/gangway-apt-quote.sh && . /tmp/gangway-apt-quote.sh && printf %s \"$V\"")
        assert result.returncode == 0, result.stderr
        assert result.stdout == url
    finally:
        trixie.root("rm -f /tmp/gangway-apt-quote.conf /tmp/gangway-apt-quote.sh")
    assert trixie.root(f"test -e {CANARY}").returncode == 1
