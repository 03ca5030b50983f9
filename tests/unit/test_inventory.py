"""Inventory validation: every mistake gives one message naming the file, the key and the fix."""

from pathlib import Path

import pytest

from tasks.inventory import Backups, Inventory, InventoryError, load, parse

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


def ed25519_key(comment: str = "alice@laptop") -> str:
    """A well-formed public key line (the blob names its own type, as ssh-keygen writes it)."""
    import base64
    blob = (11).to_bytes(4, "big") + b"ssh-ed25519" + (32).to_bytes(4, "big") + bytes(range(32))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}".strip()


@pytest.mark.parametrize("path, value", [
    ("app.health_check", "/healthz/"),
    ("app.health_check", "/health/?full=1&db=yes"),
    ("app.health_check", "/status/%C3%A9t%C3%A9/~user/a-b_c.d+e,f:g@h"),
    ("acme.email", "first.last+certs@mail.example.co.uk"),
    ("acme.email", "ADMIN_1-x@Example.COM"),
    ("acme.directory", "https://acme-staging-v02.api.letsencrypt.org/directory"),
    ("acme.directory", "https://10.213.0.1:14000/dir"),
    ("acme.directory", "https://[2001:db8::1]:14000/dir?x=1"),
    ("proxy", {"url": "http://proxy.internal:3128"}),
    ("proxy", {"url": "http://proxy.internal:3128/"}),
    ("proxy", {"url": "https://user:p%40ss%22word@10.0.0.1:8080"}),
    ("proxy", {"url": "http://[2001:db8::1]:3128",
               "no_proxy": ["localhost", ".internal.example.com", "10.0.0.5", "10.0.0.0/8", "2001:db8::/32"]}),
    ("ssh_keys", [ed25519_key(), ed25519_key(""), ed25519_key("Alice Smith (work) <alice@example.com>")]),
    ("deploy_user", "deploy-2"),
    ("app.wsgi_module", "config.wsgi"),
    ("app.requirements", "requirements/prod.txt"),
    ("app.source", "../my project (été)"),
    ("hosts.0.address", "2001:db8::10"),
    ("hosts.0.address", "server-1.example.com"),
])
def test_real_values_still_pass_the_tighter_checks(path, value):
    parse(with_change(path, value), "inventory/test.yaml", Path("."))


@pytest.mark.parametrize("path, value, expected", [
    # Reproduced in the issue "Trust": each of these passed validation and reached the server.
    ("app.health_check", "/healthz/?x=$(touch${IFS}/tmp/x)", ["app.health_check", "'$' at position 13",
                                                              "percent-encode", "e.g. /healthz/"]),
    ("acme.email", "admin@example.com\n", ["acme.email", "not an e-mail address", "e.g. admin@example.com"]),
    ("acme.email", 'ad"min@example.com', ["acme.email", "no spaces, quotes or line breaks"]),
    ("proxy", {"url": 'http://proxy:3128"'}, ["proxy.url", "'\"' at position 18", "http://proxy.internal:3128"]),
    ("proxy", {"url": "http://proxy:3128\nAcquire::x"}, ["proxy.url", "line break"]),
    # `$` in a pattern matches before a final newline: every check matches the whole value now.
    ("app.name", "mysite\n", ["app.name", "lower-case letters"]),
    ("deploy_user", "deploy\n", ["deploy_user", "not a valid Unix user name"]),
    ("hosts.0.user", "root\n", ["hosts[0].user", "not a valid Unix user name"]),
    ("app.wsgi_module", "mysite.wsgi\n", ["app.wsgi_module", "dotted Python module"]),
    ("app.domains", ["example.com\n"], ["app.domains[0]", "not a valid domain"]),
    ("hosts.0.address", "203.0.113.10\n", ["hosts[0].address", "neither an IP address"]),
    ("hosts.0.address", "fe80::1%eth0;id", ["hosts[0].address", "neither an IP address"]),
    ("app.domains", ["\u212aexample.com"], ["app.domains[0]", "ASCII", "xn--"]),
    ("acme.directory", "https://ca.test/dir\n", ["acme.directory", "line break"]),
    ("acme.directory", "https://user:pw@ca.test/dir", ["acme.directory", "user name or password"]),
    ("acme.directory", "https://ca..test/dir", ["acme.directory", "host 'ca..test'"]),
    ("proxy", {"url": "http://proxy:70000"}, ["proxy.url", "port 70000", "between 1 and 65535"]),
    ("proxy", {"url": "http://proxy:3128/path"}, ["proxy.url", "must not have a path"]),
    ("proxy", {"url": "socks5://proxy:1080"}, ["proxy.url", "http:// or https://"]),
    ("proxy", {"url": "http://proxy:3128", "no_proxy": ["a.example.com,b.example.com"]},
     ["proxy.no_proxy[0]", "one per list item"]),
    ("proxy", {"url": "http://proxy:3128", "no_proxy": ["*"]}, ["proxy.no_proxy[0]", ".example.com"]),
    ("ssh_keys", ["ssh-ed25519 AAAA me"], ["ssh_keys[0]", "do not belong together"]),
    ("ssh_keys", ["ssh-dss AAAAB3NzaC1kc3MAAACB me"], ["ssh_keys[0]", "key type"]),
    ("ssh_keys", ['command="id" ' + ed25519_key()], ["ssh_keys[0]", "no options before it"]),
    ("ssh_keys", [ed25519_key() + "\n" + ed25519_key()], ["ssh_keys[0]", "line break", "one key per list item"]),
    ("app.requirements", "requirements.txt\n", ["app.requirements", "line break"]),
    ("app.source", "project\x1b[2J", ["app.source", "control character"]),
    ("acme.ca_bundle", "ca.pem\n", ["acme.ca_bundle", "line break"]),
    ("hosts.0.key", "id_ed25519\r", ["hosts[0].key", "line break"]),
    ("app.health_check", "/\u200bhealthz/", ["app.health_check", "control character"]),
])
def test_values_that_would_escape_their_quotes_are_refused(path, value, expected):
    message = error_for(with_change(path, value))
    assert message.startswith("inventory/test.yaml: ") and "\n" not in message, message
    for part in expected:
        assert part in message, message


def test_an_unknown_key_with_a_line_break_keeps_the_message_on_one_line():
    message = error_for(with_change("app.na\nme", "x"))
    assert "\n" not in message and "'na\\nme'" in message and "unknown key" in message


def test_an_address_is_kept_in_lower_case():
    assert parse(with_change("hosts.0.address", "Server.Example.COM"), "x", Path(".")).hosts[0].address \
        == "server.example.com"


def test_the_apps_settings_module_environment_and_build_step():
    inv = parse(with_change("app", {"name": "blog", "settings_module": "mysite.settings_production",
                                    "env": {"SENTRY_ENVIRONMENT": "production", "WORKERS": 3},
                                    "build": {"command": "npm ci && npx gulp build",
                                              "outputs": ["static/dist/", "assets/app.js"]}}),
                "inventory/test.yaml", Path("."))
    assert inv.app.settings_module == "mysite.settings_production"
    assert inv.app.env == (("SENTRY_ENVIRONMENT", "production"), ("WORKERS", "3"))
    assert inv.app.build.command == "npm ci && npx gulp build"
    assert inv.app.build.outputs == ("static/dist", "assets/app.js")


@pytest.mark.parametrize("app, expected", [
    ({"env": {"DATABASE_URL": "sqlite:///x"}}, ["app.env.DATABASE_URL", "set by gangway itself"]),
    ({"env": {"DJANGO_SECRET_KEY": "x"}}, ["app.env.DJANGO_SECRET_KEY", "set by gangway itself"]),
    ({"env": {"9LIVES": "x"}}, ["app.env.9LIVES", "not a usable environment variable name"]),
    ({"env": {"A B": "x"}}, ["app.env.A B", "not a usable environment variable name"]),
    ({"env": {"GREETING": "it's"}}, ["app.env.GREETING", "\"'\"", "fab config --set"]),
    ({"env": {"GREETING": "a\\b"}}, ["app.env.GREETING", "'\\\\'"]),
    ({"env": {"GREETING": "a\nB=1"}}, ["app.env.GREETING", "line break"]),
    ({"env": {"GREETING": ["x"]}}, ["app.env.GREETING", "a string or a number"]),
    ({"env": ["GREETING=x"]}, ["app.env", "must be a mapping"]),
    ({"settings_module": "mysite/settings.py"}, ["app.settings_module", "dotted Python module"]),
    ({"build": {"command": "make"}}, ["app.build.outputs", "is missing"]),
    ({"build": {"outputs": ["dist"]}}, ["app.build.command", "is missing"]),
    ({"build": {"command": "make", "outputs": ["../outside"]}}, ["app.build.outputs[0]", "inside the project"]),
    ({"build": {"command": "make", "outputs": ["/etc"]}}, ["app.build.outputs[0]", "inside the project"]),
    ({"build": {"command": "make", "outputs": ["dist$(id)"]}}, ["app.build.outputs[0]", "'$'"]),
    ({"build": {"command": "make\nrm -rf ~", "outputs": ["dist"]}}, ["app.build.command", "line break"]),
])
def test_bad_environment_and_build_values_name_the_key_and_the_fix(app, expected):
    message = error_for(with_change("app", {"name": "blog", **app}))
    assert message.startswith("inventory/test.yaml: ") and "\n" not in message, message
    for part in expected:
        assert part in message, message


def test_the_scheduled_backup_has_defaults_and_takes_the_inventory_values():
    assert parse(GOOD, "inventory/test.yaml", Path(".")).backups == Backups("03:15", 7, 4)
    inv = parse(with_change("backups", {"time": "23:59", "keep_daily": 1, "keep_weekly": 0}), "i.yaml", Path("."))
    assert inv.backups == Backups("23:59", 1, 0)


@pytest.mark.parametrize("backups, expected", [
    ({"time": "24:00"}, ["backups.time", "'24:00'", "HH:MM", "in quotes"]),
    ({"time": "3:15"}, ["backups.time", "not a time of day"]),
    ({"time": "03:15\n"}, ["backups.time", "not a time of day"]),
    ({"time": "$(touch x)"}, ["backups.time", "not a time of day"]),
    ({"time": 195}, ["backups.time", "must be a string", "in quotes"]),  # YAML reads 03:15 unquoted as 195
    ({"keep_daily": 0}, ["backups.keep_daily", "positive"]),
    ({"keep_daily": True}, ["backups.keep_daily", "must be a number"]),
    ({"keep_weekly": -1}, ["backups.keep_weekly", "0 or more"]),
    ({"keep_dayly": 3}, ["backups.keep_dayly", "did you mean 'keep_daily'"]),
    ("daily", ["backups", "must be a mapping"]),
])
def test_bad_backup_settings_name_the_key_and_the_fix(backups, expected):
    message = error_for(with_change("backups", backups))
    for part in expected:
        assert part in message, message


def test_a_key_left_out_takes_the_one_default_the_dataclasses_state():
    from tasks import defaults
    from tasks.inventory import Acme, App, Host
    inv = parse({"app": {"name": "mysite"}, "hosts": [{"address": "203.0.113.10"}]}, "i.yaml", Path("."))
    assert inv == Inventory(app=App(name="mysite", source=Path(".").resolve()), hosts=(Host("203.0.113.10"),),
                            acme=Acme(), backups=Backups(), source="i.yaml")
    assert (inv.app.keep_releases, inv.deploy_user, inv.backups.time) == \
        (defaults.KEEP_RELEASES, defaults.DEPLOY_USER, defaults.BACKUP_TIME)
