"""Which release stays warm after a switch, over a sequence of deploys and rollbacks: always the one the next
`fab rollback` goes to, read from the state the switch leaves."""

from __future__ import annotations

import dataclasses
import io
import json
import re

from tasks.cli import deploy, rollback, status
from tasks.inventory import App, Host, Inventory
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
        target = rollback.rollback_on(fake.session(remote), None, False)
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
    history = [{"event": "live", "release": r, "previous": p} for p, r in zip([None, *IDS[:3]], IDS[:3])]
    remote = fake.FakeRemote(fake.server(*[fake.release(r) for r in IDS[:3]], live=IDS[2], history=history))
    rollback.rollback_on(fake.session(remote, STANDBY_OFF), None, False)
    assert switched(remote)[1] is None


# --- with the standby off (app.standby_minutes: 0): what deploy and status say ---------------------------------

STANDBY_OFF = Inventory(dataclasses.replace(App("mysite"), standby_minutes=0), (Host("10.0.0.2"),))


def deployed_with_standby_off(stopping: str) -> str:
    """A deploy over IDS[1] (live, IDS[0] before it) with the standby off; what it printed. The switch reports
    the instances systemd accepted to stop as `stopping`."""
    history = [{"event": "live", "release": r, "previous": p} for p, r in zip([None, *IDS[:2]], IDS[:2])]
    remote = fake.FakeRemote(fake.server(*[fake.release(r) for r in IDS[:2]], live=IDS[1], running=IDS[:2],
                                         history=history, inventory=STANDBY_OFF))
    remote.on("checks", report={"migrations": [], "venv": "reused", "warnings": []})
    remote.on("switch", report={"web_stopping": stopping})
    out = io.StringIO()
    deploy.deploy_to(fake.session(remote, STANDBY_OFF, out=out), fake.a_source())
    assert switched(remote)[1] is None
    return out.getvalue()


def test_a_deploy_with_the_standby_off_says_what_systemd_stops_and_that_a_rollback_starts_cold():
    out = deployed_with_standby_off(f"mysite@{IDS[1]}.service")
    assert (f"; no standby is kept (app.standby_minutes: 0): systemd is stopping mysite@{IDS[1]}.service; "
            f"`fab rollback` starts {IDS[1]} cold first, which adds the app's start-up time") in out, out
    assert "kept warm" not in out


def test_a_deploy_with_the_standby_off_names_no_stop_it_did_not_see():
    out = deployed_with_standby_off("")
    assert "no standby is kept (app.standby_minutes: 0); `fab rollback` starts" in out and "stopping" not in out


def status_of(inventory: Inventory) -> str:
    """`fab status` on a server where IDS[1] is live after IDS[0], and only its instance runs."""
    history = [{"event": "live", "release": r, "previous": p} for p, r in zip([None, *IDS[:2]], IDS[:2])]
    facts = {**fake.server(*[fake.release(r) for r in IDS[:2]], live=IDS[1], history=history, inventory=inventory),
             "now": 1_800_000_000, "units": {f"mysite@{IDS[1]}.service": "active/running",
                                             "nginx.service": "active/running", "postgresql.service": "active/exited"},
             "timers": [], "health": status.Health("200", 0, True, f"/run/mysite/{IDS[1]}/gunicorn.sock"),
             "certificate": None, "disk": [status.Disk("/", 40, 8 << 20)],
             "memory": {"MemTotal": 2_000_000, "MemAvailable": 1_500_000}, "newest_backup": None,
             "updates": (0, 0), "unattended": True, "reboot": None,
             "database:reach": {"ok": True, "said": "mysite@mysite"}}
    out = io.StringIO()
    status.status_on(fake.session(fake.FakeRemote(facts), inventory, out=out))
    return next(line for line in out.getvalue().splitlines() if " gunicorn:" in line)


def test_status_with_the_standby_off_says_none_is_kept_and_the_rollback_starts_cold():
    line = status_of(STANDBY_OFF)
    assert line.split()[0] == "ok"
    assert (f"mysite@{IDS[1]}.service active; no standby is kept (app.standby_minutes: 0): the rollback target "
            f"{IDS[0]} is not running, and `fab rollback` starts it cold first") in line, line
    # With the standby on, the same server has a standby whose time has run out, as before.
    assert f"the rollback target {IDS[0]} is not running (a rollback starts it first)" in status_of(
        fake.default_inventory())
