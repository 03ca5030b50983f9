"""An environment the app could not start with is refused by deploy and by `fab config --set`, before
anything is uploaded, built or written."""

from __future__ import annotations

import dataclasses
import io

import pytest

from tasks.cli import deploy, operate
from tasks.inventory import App, Host, Inventory
from tasks.session.run import DeployError
from tests.orchestration import fake

LIVE = "20261201T000000Z-aaaaaaa"


def test_a_deploy_with_an_inventory_env_past_the_limit_changes_nothing():
    app = dataclasses.replace(App("mysite"), env=tuple((f"BLOB{i}", "x" * 120_000) for i in range(18)))
    remote = fake.FakeRemote(fake.server(fake.release(LIVE)))
    remote.facts["env_sizes"]["config"] = {"FROM_CONFIG": 100_000}
    with pytest.raises(DeployError) as refused:
        deploy.deploy_to(fake.session(remote, Inventory(app, (Host("10.0.0.2"),))), fake.a_source())
    message = str(refused.value)
    assert "past the 2.00 MiB Linux lets a program start with" in message and "would be 2." in message
    assert "app.env in the inventory" in message and "Nothing was changed" in message
    assert f"{LIVE} is still serving" in message
    assert remote.scripts == [] and remote.uploads == {}  # not even the lock's cleanup ran: nothing was sent


def test_a_deploy_refuses_when_fab_config_s_values_already_fill_the_room():
    remote = fake.FakeRemote(fake.server(fake.release(LIVE)))
    remote.facts["env_sizes"]["config"] = {"HUGE": 200_000}
    with pytest.raises(DeployError, match=r"HUGE \(195\.3 KiB, fab config\)"):
        deploy.deploy_to(fake.session(remote), fake.a_source())
    assert remote.uploads == {}


def test_config_set_past_the_limit_is_refused_before_anything_is_written():
    remote = fake.FakeRemote({**fake.server(fake.release(LIVE)), "config": "", "unit_reads_config": True})
    out = io.StringIO()
    with pytest.raises(DeployError) as refused:
        operate.config_on(fake.session(remote, out=out), {"CERT": "x" * 140_000}, [], False)
    assert "CERT (136.7 KiB, fab config)" in str(refused.value) and "MAX_ARG_STRLEN" in str(refused.value)
    assert remote.uploads == {} and remote.scripts == []


def test_config_set_within_the_limit_goes_ahead():
    remote = fake.FakeRemote({**fake.server(fake.release(LIVE)), "config": "", "unit_reads_config": True})
    remote.put_error = DeployError("stop here: the upload was reached")
    with pytest.raises(DeployError, match="the upload was reached"):
        operate.config_on(fake.session(remote), {"TOKEN": "x" * 1000}, [], False)
