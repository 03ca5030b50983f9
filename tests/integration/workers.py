"""What the worker modules (test_celery, test_django_tasks) read back on the server: the rows their tasks write
in counter_hit, and their units' states as systemd reports them."""

from __future__ import annotations

import time

WAIT = 60  # seconds for any one thing to happen on a busy machine


def rows(site, like: str) -> list[str]:
    return site.sql(f"select path from counter_hit where path like '{like}' order by id").split()


def first_row(site, like: str, timeout: float = WAIT) -> str:
    """The first row of counter_hit whose path is LIKE `like`, waiting for it to be written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := rows(site, like):
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no row like {like} within {timeout} s")


def state(site, unit: str) -> str:
    return site.root(f"systemctl is-active {unit}", check=False).strip()


def wait_state(site, unit: str, wanted: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while (now := state(site, unit)) != wanted and time.monotonic() < deadline:
        time.sleep(0.5)
    assert now == wanted, f"{unit} is {now} after {timeout} s, not {wanted}"


def main_pid(site, unit: str) -> int:
    return int(site.root(f"systemctl show -P MainPID {unit}").strip())
