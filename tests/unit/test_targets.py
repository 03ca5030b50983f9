"""Choosing the inventory and the hosts the way Fabric users expect: --inventory, config, -H."""

from pathlib import Path

import pytest
from fabric import Config, Connection
from invoke import Context

from tasks.connection import targets
from tasks.inventory import Host, InventoryError, for_host


def write(directory: Path, name: str, address: str = "203.0.113.10") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.yaml").write_text(f"app: {{name: mysite, domains: [example.com]}}\n"
                                            f"hosts: [{{address: {address}}}]\n")


@pytest.fixture
def inventories(tmp_path, monkeypatch):
    monkeypatch.setattr(targets, "INVENTORY_DIR", tmp_path)
    return tmp_path


def test_the_inventory_option_names_a_file_in_inventory(inventories):
    write(inventories, "staging", "198.51.100.7")
    chosen, hosts = targets.select(Context(), "staging")
    assert [h.address for h in hosts] == ["198.51.100.7"] and chosen.app.name == "mysite"


def test_production_is_the_default_and_fabric_config_can_choose_another(inventories):
    write(inventories, "production", "198.51.100.1")
    write(inventories, "staging", "198.51.100.2")
    assert targets.select(Context(), None)[1][0].address == "198.51.100.1"
    config = Config(overrides={"gangway": {"inventory": "staging"}})
    assert targets.select(Context(config=config), None)[1][0].address == "198.51.100.2"


def test_fab_dash_h_works_without_an_inventory_file(inventories):
    connection = Connection("192.0.2.5", user="admin", port=2222)
    chosen, [host] = targets.select(connection, None)
    assert (host.address, host.user, host.port) == ("192.0.2.5", "admin", 2222)
    assert chosen.app.name == "app" and not chosen.tls


def test_fab_dash_h_overrides_the_inventory_hosts_but_keeps_the_rest(inventories):
    write(inventories, "production", "198.51.100.1")
    chosen, [host] = targets.select(Connection("192.0.2.5", user="root"), None)
    assert host.address == "192.0.2.5" and chosen.app.domains == ("example.com",)


def test_no_inventory_and_no_host_says_what_to_do(inventories):
    with pytest.raises(InventoryError, match="fab init"):
        targets.select(Context(), None)


def test_the_fabfile_sets_the_inventory_directory(tmp_path):
    write(tmp_path / "deploy", "production", "198.51.100.9")
    from tasks.collection import namespace_for
    config = Config(overrides=namespace_for(tmp_path / "fabfile.py").configuration())
    chosen, [host] = targets.select(Context(config=config), None)
    assert host.address == "198.51.100.9" and chosen.source == "deploy/production.yaml"


def test_the_operators_public_key_comes_from_the_key_file(tmp_path):
    import paramiko
    private = tmp_path / "id_test"
    rsa = paramiko.RSAKey.generate(1024)
    rsa.write_private_key_file(str(private))
    host = Host("192.0.2.5", key=private)
    [public] = targets.public_keys(host, for_host(host))
    assert public == f"ssh-rsa {rsa.get_base64()}"
    # the .pub next to the key wins, whatever key it holds
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ me@laptop"
    (tmp_path / "id_test.pub").write_text(line + "\n")
    assert targets.public_keys(host, for_host(host)) == (line,)
