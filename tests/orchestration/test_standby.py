"""Which release stays warm after a switch, over a sequence of deploys and rollbacks: always the one the next
`fab rollback` goes to, read from the state the switch leaves."""

from __future__ import annotations

import json
import re

from tasks.cli import deploy
from tasks.commands.shell import q
from tasks.session.run import server_state
from tests.orchestration import fake

IDS = [f"2026120{n}T000000Z-aaaaaa{n}" for n in range(1, 6)]  # five deploys, oldest first


def switched(remote: fake.FakeRemote) -> tuple[dict, str | None]:
    """The history line the last switch wrote, and the instance it kept warm."""
    script = remote.scripts[-1]
    line = re.search(r"printf '%s\\n' '(\{.*?\})' >> ", script)
    warm = re.search(r"gw_keep_warm='?([^';\n]*)'?", script)
    name = warm.group(1) if warm else ""
    return json.loads(line.group(1)), (name.removeprefix("mysite@").removesuffix(".service") or None)


def test_three_rollbacks_in_a_row_keep_only_the_next_rollback_target_warm():
    history = [{"event": "live", "release": r, "previous": p} for p, r in zip([None, *IDS], IDS)]
    facts = fake.server(*[fake.release(r) for r in IDS], live=IDS[-1], running=IDS[-2:], history=history)
    remote = fake.FakeRemote(facts)
    for expected_target, expected_warm in ((IDS[3], IDS[2]), (IDS[2], IDS[1]), (IDS[1], IDS[0])):
        target = deploy.rollback_on(fake.session(remote), None, False)
        assert target == expected_target
        event, warm = switched(remote)
        # What the switch wrote is what the server has now; the next rollback reads it.
        remote.facts.update(live=target, history=remote.facts["history"] + json.dumps(event) + "\n",
                            running=[target, warm])
        after = server_state(remote.facts)
        assert warm == after.previous_good() == expected_warm
    assert remote.sent(f"gw_keep_live={q('mysite@' + IDS[1] + '.service')};")


def test_a_deploy_keeps_the_release_it_replaced_warm_and_nothing_else():
    history = [{"event": "live", "release": r, "previous": p} for p, r in zip([None, *IDS[:2]], IDS[:2])]
    remote = fake.FakeRemote(fake.server(*[fake.release(r) for r in IDS[:2]], live=IDS[1], running=IDS[:2],
                                         history=history))
    remote.on("checks", report={"migrations": [], "venv": "reused", "warnings": []})
    new = deploy.deploy_to(fake.session(remote), fake.a_source())
    event, warm = switched(remote)
    assert event["release"] == new and warm == IDS[1]


def test_standby_off_keeps_nothing_warm():
    import dataclasses
    from tasks.inventory import App, Host, Inventory
    inventory = Inventory(dataclasses.replace(App("mysite"), standby_minutes=0), (Host("10.0.0.2"),))
    history = [{"event": "live", "release": r, "previous": p} for p, r in zip([None, *IDS[:3]], IDS[:3])]
    remote = fake.FakeRemote(fake.server(*[fake.release(r) for r in IDS[:3]], live=IDS[2], history=history))
    deploy.rollback_on(fake.session(remote, inventory), None, False)
    assert switched(remote)[1] is None
