"""Dry runs on the shared trixie server: `fab provision --dry-run` prints the diff of a config file a changed
inventory value would rewrite, `fab deploy --dry-run` names the pending release and its migration, and
neither changes a byte of the server: every file under /etc and /srv (content, mode, owner, link target) and
every unit's state are the same before and after."""

from __future__ import annotations

import re

import pytest

from tests import testhost
from tests.integration.inventory import write_inventory
from tests.integration.appsite import GOOD_MIGRATION, make_site
from tests.integration.conftest import APP, DOMAINS, fab

# Watched for a minute and a half, an idle test server changed nothing under /etc or /srv (content, mode,
# owner, mtime), nor any unit's state. What can change by itself while a test runs: the dynamic linker's cache, which
# ldconfig rewrites whenever a package is installed (unattended-upgrades runs on its own timer).
VOLATILE = ("/etc/ld.so.cache",)
# Units that come and go by themselves: every SSH login (the test's own commands) starts a session and its
# user's manager; jobs started by timers (Debian's and the app's own, APP-*.timer) run when they are due.
VOLATILE_UNITS = re.compile(r"^(session-\d+\.scope|user@\d+\.service|user-runtime-dir@\d+\.service|"
                            r"apt-daily.*|man-db\..*|dpkg-db-backup\..*|logrotate\..*|e2scrub.*|fstrim\..*|"
                            r"systemd-tmpfiles-clean\..*|certbot\..*|debsums.*|unattended-upgrades\..*|"
                            rf"{APP}-.*)$")

# What systemd timers change on their own under /etc and /srv. A timer fires when it is due, whatever the test
# does: a certificate renewal, the scheduled backup, an unattended upgrade or a standby timer stopping the
# previous release's instance that happens between the two snapshots is not a change the dry run made (nor one
# gangway could show it would make), and comparing it would fail the proof at random on a busy machine. Only
# what a timer's service that really ran between the snapshots (a new invocation, or a transient standby timer
# that fired and went away) may have written is left out: the same paths still count when no timer ran.
TIMER_WRITES = {
    "certbot.service": ("/etc/letsencrypt/",),  # a renewal: new certificate files and their renewal config
    f"{APP}-backup.service": (f"/srv/{APP}/backups/",),  # the daily dump, and the retention pruning old ones
    "apt-daily-upgrade.service": ("/etc/",),  # unattended-upgrades installs packages: their files under /etc
}
STANDBY = re.compile(rf"^{APP}-standby-(.+)\.service$")  # it stops APP@RELEASE.service when it fires


def snapshot(server, provisioned: bool = True) -> dict[str, str]:
    """path -> "type mode owner group link-target mtime inode sha256" for every file under /etc and /srv (a file
    rewritten with the same content counts as a change too); plus each unit's state, and each timer's last run."""
    prune = " ".join(f"! -path {p}" for p in VOLATILE)
    out = (server.root if provisioned else server.ssh)(
        # Each timer's service and its last invocation, at the start and at the end of the snapshot: which
        # timers ran between two snapshots (see TIMER_WRITES).
        "ran() { for t in $(systemctl list-units --all --plain --no-legend --type=timer | awk '{print $1}'); do "
        "s=$(systemctl show -P Unit \"$t\") && [ -n \"$s\" ] || continue; "
        "printf '%s %s/%s\\n' \"$s\" \"$(systemctl show -P InvocationID \"$s\")\" "
        "\"$(systemctl show -P ExecMainStartTimestampMonotonic \"$s\")\"; done; }; ran; echo ==; "
        f"find /etc /srv -xdev {prune} -printf '%p\\t%y %m %u %g %l %T@ %i\\n' | sort; echo ==; "
        f"find /etc /srv -xdev -type f {prune} -print0 | sort -z | xargs -0 sha256sum; echo ==; "
        "systemctl list-units --all --plain --no-legend | awk '{print $1, $3, $4}' | sort; echo ==; ran")
    assert out.returncode == 0, out.stderr
    started, listing, hashes, units, ended = out.stdout.split("==\n")
    state = {}
    for line in listing.splitlines():
        path, _, meta = line.partition("\t")
        state[path] = meta
    for line in hashes.splitlines():
        digest, _, path = line.partition("  ")
        state[path] += " " + digest
    for line in units.splitlines():
        name, _, states = line.partition(" ")
        if not VOLATILE_UNITS.match(name):
            state["unit:" + name] = states
    for key, timers in (("ran-start:", started), ("ran-end:", ended)):
        for line in timers.splitlines():
            service, _, invocation = line.partition(" ")
            state[key + service] = invocation
    for path in ((f"/etc/nginx/sites-available/{APP}", f"/srv/{APP}/shared/env") if provisioned else ()) + (
            "/etc/machine-id", "/etc/passwd"):
        assert len(state.get(path, "").split()) == 7, f"{path} was not hashed"
    assert "unit:systemd-journald.service" in state
    return state


def timers_changed(before: dict[str, str], after: dict[str, str]) -> tuple[tuple[str, ...], set[str]]:
    """What the timers that ran between the two snapshots may have changed on their own: path prefixes, and
    the state keys of the instances standby timers stopped."""
    services = {key.partition(":")[2] for key in before.keys() | after.keys() if key.startswith("ran-")}
    ran = [s for s in services if before.get(f"ran-start:{s}") != after.get(f"ran-end:{s}")]
    prefixes = tuple(prefix for service in ran for prefix in TIMER_WRITES.get(service, ()))
    stopped = {f"unit:{APP}@{match[1]}.service" for service in ran if (match := STANDBY.match(service))}
    return prefixes, stopped


def assert_unchanged(before: dict[str, str], after: dict[str, str]) -> None:
    prefixes, stopped = timers_changed(before, after)
    changed = {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys()
               if before.get(k) != after.get(k) and not k.startswith("ran-") and k not in stopped
               and not (prefixes and k.startswith(prefixes))}
    assert not changed, f"the dry run changed the server: {changed}"


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory):
    # The server is shared: modules before this one provision it with their own inventories (server-wide files
    # such as certbot's proxy drop-in follow the last of them). Provision it as the shared inventory says, so
    # "would change" below means what the dry run's own inventory changes.
    trixie.provision()
    site = make_site(trixie, tmp_path_factory, "dryrun")
    site.deploy()
    return site


def test_provision_dry_run_shows_the_diff_and_changes_nothing(trixie, site, tmp_path):
    inventory = tmp_path / "bigger-uploads.yaml"
    write_inventory(trixie.host, inventory, app=APP, domains=DOMAINS, max_upload_mb=77)
    before = snapshot(trixie)
    out = fab("provision", "--inventory", str(inventory), "--dry-run")
    after = snapshot(trixie)
    assert_unchanged(before, after)
    text = out.stdout
    print(text)  # pytest -s shows the real output (README)
    assert f"--- /etc/nginx/sites-available/{APP} (on the server)" in text, text
    assert re.search(r"^ +-\tclient_max_body_size \d+m;$", text, re.M), text
    assert re.search(r"^ +\+\tclient_max_body_size 77m;$", text, re.M), text
    assert "to change nginx site" in text and "later steps may differ" in text
    assert "nginx -t" in text and "systemctl reload-or-restart nginx" in text, text
    assert re.search(r"recap \S+: \d+ steps, [12] would change", text), text
    assert text.rstrip().endswith("dry run: nothing was changed"), text
    assert "\x1b" not in text


def test_provision_dry_run_of_the_same_inventory_has_nothing_to_change(trixie, site):
    out = fab("provision", "--inventory", str(trixie.inventory), "--dry-run")
    assert " 0 would change" in out.stdout, out.stdout
    assert out.stdout.rstrip().endswith("dry run: nothing was changed")


def test_deploy_dry_run_names_the_release_and_migration_and_changes_nothing(trixie, site, tmp_path):
    live = site.answering()
    commit = site.repo.commit("A new column", **{"counter__migrations__0002_hit_agent.py": GOOD_MIGRATION})
    # The same site with a new app.env value: the dry run names it and keeps its value to itself.
    inventory = write_inventory(trixie.host, tmp_path / "with-env.yaml", app=APP, domains=DOMAINS,
                                         source=site.repo.path, health_check="/healthz/",
                                         env={"PAYMENT_TOKEN": "tok-very-private"})
    before = snapshot(trixie)
    out = fab("deploy", "--inventory", str(inventory), "--dry-run")
    after = snapshot(trixie)
    assert_unchanged(before, after)
    assert site.answering() == live
    text = out.stdout
    print(text)
    assert re.search(rf"to build +release: \d{{8}}T\d{{6}}Z-{commit[:7]} ", text), text
    assert re.search(r"python: environment \w+ reused", text), text
    assert "+ PAYMENT_TOKEN (value not shown)" in text and "tok-very-private" not in text, text
    assert "counter.0002_hit_agent" in text and "1 pending" in text, text
    assert re.search(r"switch: traffic would switch from \S+ to \S+", text), text
    assert "no deploy lock taken" in text
    assert "DJANGO_SECRET_KEY" not in text
    assert text.rstrip().endswith("dry run: nothing was changed"), text


def test_provision_dry_run_on_a_fresh_server_shows_every_step_and_changes_nothing(tmp_path):
    host = testhost.start("trixie")
    try:
        inventory = write_inventory(host, tmp_path / "fresh.yaml", app=APP, domains=DOMAINS)
        before = snapshot(host, provisioned=False)
        out = fab("provision", "--inventory", str(inventory), "--dry-run")
        assert_unchanged(before, snapshot(host, provisioned=False))
    finally:
        host.stop()
    text = out.stdout
    print(text)
    assert "to change system packages" in text and "apt-get" in text, text
    assert "to change postgresql" in text and "to change deploy user deploy" in text, text
    assert "+++ /etc/nginx/sites-available/mysite (as provision would write it)" in text, text
    assert "content not shown: the file is secret" in text  # authorized_keys, sudoers
    assert re.search(r"recap \S+: \d+ steps, \d{2} would change", text), text
    assert text.rstrip().endswith("dry run: nothing was changed"), text
