"""Inventory validation: every mistake gives one message naming the file, the key and the fix."""

from pathlib import Path

import pytest

from tasks.inventory import Inventory, InventoryError, load, parse

GOOD = {
    "app": {"name": "mysite", "domains": ["example.com", "www.example.com"]},
    "hosts": [{"address": "203.0.113.10", "user": "root", "port": 22}],
    "acme": {"email": "admin@example.com"},
}


def with_change(path: str, value, base=GOOD):
    """A copy of `base` with the dotted `path` set to `value` (or removed, for ...)."""
    import copy
    data = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


def error_for(data) -> str:
    with pytest.raises(InventoryError) as caught:
        parse(data, "inventory/test.yaml", Path("."))
    return str(caught.value)


def test_a_good_inventory_parses_with_defaults():
    inv = parse(GOOD, "inventory/test.yaml", Path("."))
    assert isinstance(inv, Inventory)
    assert inv.app.domains == ("example.com", "www.example.com")
    assert inv.app.wsgi == "mysite.wsgi"
    assert inv.deploy_user == "deploy"
    assert inv.acme.directory.startswith("https://acme-v02.api.letsencrypt.org")
    assert inv.hosts[0].port == 22 and inv.tls


@pytest.mark.parametrize("path, value, expected", [
    ("app.name", ..., ["inventory/test.yaml", "app.name", "is missing", "e.g. mysite"]),
    ("app.name", "My-Site", ["app.name", "'My-Site'", "lower-case letters"]),
    ("app.name", "postgres", ["system account"]),
    ("app.domians", ["x.com"], ["app.domians", "unknown key", "did you mean 'domains'"]),
    ("app.domains", "example.com", ["app.domains", "must be a list"]),
    ("app.domains", ["exa mple.com"], ["app.domains[0]", "'exa mple.com'", "not a valid domain"]),
    ("app.domains", ["*.example.com"], ["app.domains[0]", "wildcard", "HTTP-01"]),
    ("app.domains", ["10.0.0.1"], ["app.domains[0]", "is an address"]),
    ("app.domains", ["localhost"], ["app.domains[0]", "with a dot"]),
    ("app.domains", ["a.com", "A.com"], ["app.domains[1]", "listed twice"]),
    ("hosts.0.port", "22", ["hosts[0].port", "must be a number", "found str '22'"]),
    ("hosts.0.port", 70000, ["hosts[0].port", "between 1 and 65535"]),
    ("hosts.0.address", "not an address!", ["hosts[0].address", "neither an IP address nor a host name"]),
    ("hosts.0.address", ..., ["hosts[0].address", "is missing"]),
    ("hosts.0.key", "~/.ssh/does-not-exist", ["hosts[0].key", "no such file", "ssh-keygen"]),
    ("hosts.0.user", "Root User", ["hosts[0].user", "not a valid Unix user"]),
    ("acme.email", "not-an-email", ["acme.email", "not an e-mail address"]),
    ("acme.directory", "http://insecure/dir", ["acme.directory", "https://"]),
    ("acme.ca_bundle", "missing.pem", ["acme.ca_bundle", "no such file"]),
    ("proxy", {"url": "proxy:3128"}, ["proxy.url", "http://"]),
    ("proxy", {"no_proxy": []}, ["proxy.url", "is missing"]),
    ("deploy_user", "root", ["deploy_user", "'root'", "not the deploy user"]),
    ("ssh_keys", ["not a key"], ["ssh_keys[0]", "OpenSSH public key"]),
    ("extra", 1, ["extra", "unknown key", "known keys here"]),
])
def test_each_mistake_names_the_key_and_the_fix(path, value, expected):
    message = error_for(with_change(path, value))
    assert message.startswith("inventory/test.yaml: ")
    for part in expected:
        assert part in message, message


def test_a_key_that_exists_is_resolved_relative_to_the_inventory(tmp_path):
    (tmp_path / "id_test").write_text("key")
    inv = parse(with_change("hosts.0.key", "id_test"), "x.yaml", tmp_path)
    assert inv.hosts[0].key == tmp_path / "id_test"


def test_broken_yaml_gives_line_and_column(tmp_path):
    (tmp_path / "broken.yaml").write_text("app:\n  name: mysite\n domains: [a.com\n")
    with pytest.raises(InventoryError) as caught:
        load("broken", tmp_path)
    assert "line " in str(caught.value) and "not valid YAML" in str(caught.value)


def test_a_missing_file_lists_the_ones_there(tmp_path):
    (tmp_path / "staging.yaml").write_text("app: {name: x}\n")
    with pytest.raises(InventoryError) as caught:
        load("prodution", tmp_path)
    assert "no such inventory file" in str(caught.value) and "staging" in str(caught.value)


def test_an_empty_file_says_where_to_start(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    with pytest.raises(InventoryError, match="empty"):
        load("empty", tmp_path)


def test_the_shipped_example_is_valid_apart_from_its_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519").write_text("key")
    inv = load("example")
    assert inv.app.name == "mysite" and inv.hosts[0].address == "203.0.113.10"


def test_proxy_environment_covers_apt_pip_and_certbot():
    inv = parse(with_change("proxy", {"url": "http://proxy:3128", "no_proxy": ["10.0.0.1"]}), "x", Path("."))
    env = inv.proxy.environment()
    assert env["https_proxy"] == "http://proxy:3128" and env["no_proxy"] == "10.0.0.1"
