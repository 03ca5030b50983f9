"""Release logic without a server: ids, which release is previous, what to prune, which migrations to reverse."""

import json
import subprocess
from datetime import datetime, timezone

from tasks.commands import release as release_commands
from tasks.facts import releases
from tasks.layout import Layout
from tasks.session.lock import describe_holder, holder_command
from tasks.facts.releases import GOOD, Release, ServerState


def state(good=(), live=None, history=(), failed=(), building=(), venvs=()):
    rels = {r: Release(r, GOOD, requirements=f"h{r[-1]}") for r in good}
    rels.update({r: Release(r) for r in building})
    return ServerState(releases=rels, failed=list(failed), live=live, running=[], history=list(history),
                       venvs=list(venvs))


def live(release, **more):
    return {"event": "live", "release": release, **more}


def test_release_ids_sort_by_time_and_name_the_commit():
    early = releases.new_release_id("a" * 40, now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    late = releases.new_release_id("b" * 40, now=datetime(2026, 11, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert early == "20260102T030405Z-aaaaaaa" and early < late
    assert releases.new_release_id("c" * 40, dirty=True).endswith("-ccccccc-dirty")
    assert releases.RELEASE_ID.match(early) and releases.RELEASE_ID.match(late + "-dirty")


def test_previous_is_the_one_live_before_the_current():
    s = state(good=["r1", "r2", "r3"], live="r3", history=[live("r1"), live("r2"), live("r3")])
    assert s.previous_good() == "r2"


def test_after_a_rollback_the_abandoned_release_is_not_previous():
    s = state(good=["r1", "r2", "r3"], live="r2",
              history=[live("r1"), live("r2"), live("r3"), {"event": "rollback", "release": "r2", "from": "r3"}])
    assert s.previous_good() == "r1"


def test_previous_skips_releases_that_were_pruned_or_failed():
    s = state(good=["r2", "r4"], live="r4", history=[live("r1"), live("r2"), live("r3"), live("r4")])
    assert s.previous_good() == "r2"


def test_without_history_previous_is_the_newest_good_release_older_than_live():
    assert state(good=["r1", "r2", "r3"], live="r2").previous_good() == "r1"
    assert state(good=["r1"], live="r1").previous_good() is None


def test_unfinished_releases_are_the_ones_an_interrupted_deploy_left():
    s = state(good=["r1"], live="r1", building=["r2"])
    assert s.unfinished() == ["r2"]


def test_prune_keeps_the_newest_and_never_live_or_previous():
    s = state(good=[f"r{i}" for i in range(1, 9)])
    assert releases.to_prune(s, keep=5, new_live="r8", previous="r7") == ["r1", "r2", "r3"]
    # An old release that is live after a rollback, and the previous one, survive any keep count.
    pruned = releases.to_prune(s, keep=2, new_live="r2", previous="r1")
    assert "r1" not in pruned and "r2" not in pruned and pruned == ["r3", "r4", "r5", "r6", "r7", "r8"]


def test_failed_releases_are_bounded_and_venvs_follow_their_releases():
    assert releases.failed_to_prune(["f3", "f1", "f2"], keep=2) == ["f1"]
    assert releases.failed_to_prune(["f1"], keep=2) == []
    s = state(good=["r1", "r2"], venvs=["h1", "h2", "h9"])
    assert releases.venvs_to_prune(s, ["r2"]) == ["h1", "h9"]


def test_migrations_the_target_does_not_know_are_the_ones_to_reverse():
    applied = ["auth.0001_initial", "counter.0001_initial", "counter.0002_agent", "counter.0003_more", "x.0001"]
    target = Release("t", migrations=["auth.0001_initial", "counter.0001_initial"])
    assert releases.migrations_to_reverse(applied, target) == ["counter.0002_agent", "counter.0003_more", "x.0001"]
    assert releases.migrations_missing(applied, target) == []
    assert releases.migrations_missing(["auth.0001_initial"], target) == ["counter.0001_initial"]


# Wagtail-like: 0001_squashed_0003 replaces 0001..0003; Django records all four names when it applies it.
SQUASHED = Release("s", migrations=["w.0001_initial", "w.0002_a", "w.0003_b", "w.0001_squashed_0003", "w.0004_c"],
                   replaces={"w.0001_squashed_0003": ["w.0001_initial", "w.0002_a", "w.0003_b"]})


def test_the_names_a_squashed_migration_replaces_are_known_so_nothing_is_ahead():
    applied = ["w.0001_initial", "w.0002_a", "w.0003_b", "w.0001_squashed_0003", "w.0004_c"]
    assert releases.migrations_to_reverse(applied, SQUASHED) == []
    assert releases.migrations_missing(applied, SQUASHED) == []
    # Metadata that lists only the graph's nodes (written before replaced names were listed) still knows them.
    old = Release("o", migrations=["w.0001_squashed_0003", "w.0004_c"], replaces=SQUASHED.replaces)
    assert releases.migrations_to_reverse(applied, old) == []
    state = ServerState(releases={"s": SQUASHED}, failed=[], live="s", running=["s"], history=[], venvs=[],
                        applied=applied)
    assert state.schema_ahead() == [] and state.schema_behind() == []


def test_a_squashed_migration_counts_as_applied_when_all_it_replaces_are_and_the_other_way_round():
    before_the_squash = ["w.0001_initial", "w.0002_a", "w.0003_b"]  # applied one by one, before it existed
    assert releases.migrations_missing(before_the_squash, SQUASHED) == ["w.0004_c"]
    only_the_squash = ["w.0001_squashed_0003", "w.0004_c"]  # a table that recorded the squashed name alone
    assert releases.migrations_missing(only_the_squash, SQUASHED) == []
    partly = ["w.0001_initial"]
    assert releases.migrations_missing(partly, SQUASHED) == ["w.0002_a", "w.0003_b", "w.0001_squashed_0003",
                                                             "w.0004_c"]


def test_the_schema_is_ahead_or_behind_the_live_release_and_unknown_when_unreadable():
    live = Release("r1", GOOD, migrations=["a.0001", "a.0002"])
    ahead = ServerState(releases={"r1": live}, failed=[], live="r1", running=[], history=[], venvs=[],
                        applied=["a.0001", "a.0002", "a.0003"])
    assert ahead.schema_ahead() == ["a.0003"] and ahead.schema_behind() == []
    behind = ServerState(releases={"r1": live}, failed=[], live="r1", running=[], history=[], venvs=[],
                         applied=["a.0001"])
    assert behind.schema_ahead() == [] and behind.schema_behind() == ["a.0002"]
    unread = ServerState(releases={"r1": live}, failed=[], live="r1", running=[], history=[], venvs=[],
                         applied=None)
    assert unread.schema_ahead() == [] and unread.schema_behind() == []


def test_release_metadata_without_replaces_still_loads():
    old = Release.from_json(json.dumps({"id": "r", "migrations": ["a.0001"]}))
    assert old.replaces == {} and releases.known_names(old) == {"a.0001"}


def test_server_listings_are_parsed_and_broken_metadata_counts_as_unfinished():
    good = Release("20260101T000000Z-abcdef1", GOOD, commit="abcdef1" + "0" * 33)
    text = (f"20260101T000000Z-abcdef1\t{good.to_json().replace(chr(10), '')}\n"
            "20260102T000000Z-abcdef2\t{broken\n"
            "not-a-release\t{}\n")
    parsed = releases.parse_releases(text)
    assert parsed["20260101T000000Z-abcdef1"].status == GOOD
    assert parsed["20260102T000000Z-abcdef2"].status == releases.BUILDING
    assert "not-a-release" not in parsed
    layout = Layout("m")
    assert layout.release_of_socket(layout.socket("R1")) == "R1" and layout.release_of_socket("/elsewhere") is None
    assert releases.parse_history('{"event": "live"}\n{"event": "li') == [{"event": "live"}]


def test_the_env_file_keeps_the_operators_lines_and_the_secret(tmp_path):
    layout = Layout("m")
    env = tmp_path / "env"
    env.write_text("DJANGO_SECRET_KEY='kept'\nMY_SETTING='mine'\nDJANGO_DB_NAME='old'\n")
    script = release_commands.env_file(layout, {"DJANGO_DB_NAME": "m", "DJANGO_ALLOWED_HOSTS": "a.test"})
    subprocess.run(["sh", "-c", script.replace(layout.env_file, str(env))], check=True)
    assert env.read_text() == (f"{release_commands.ENV_FILE_MARK}DJANGO_ALLOWED_HOSTS DJANGO_DB_NAME\n"
                               "DJANGO_SECRET_KEY='kept'\nMY_SETTING='mine'\nDJANGO_DB_NAME=\"m\"\n"
                               "DJANGO_ALLOWED_HOSTS=\"a.test\"\n")
    assert oct(env.stat().st_mode)[-3:] == "600"
    fresh = tmp_path / "fresh"
    subprocess.run(["sh", "-c", script.replace(layout.env_file, str(fresh))], check=True)
    assert fresh.read_text().splitlines()[1].startswith("DJANGO_SECRET_KEY='")
    assert len(fresh.read_text().splitlines()[1]) > 60


def test_the_lock_is_exclusive_and_says_who_holds_it(tmp_path):
    """The real holder command, run locally with flock(1): a second holder is refused with the first's info."""
    layout = Layout("m")
    command = holder_command(layout, {"who": "alice@laptop", "what": "deploy", "since": "now", "pid": 0})
    for path in (layout.lock, layout.lock_info, layout.lock_work):
        command = command.replace(path, str(tmp_path / path.rsplit("/", 1)[1]))
    first = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "acquired"
        second = subprocess.run(["sh", "-c", command], stdin=subprocess.DEVNULL, capture_output=True, text=True)
        assert second.returncode == 75 and second.stdout.startswith("busy")
        info = second.stdout.split("\n", 1)[1]
        assert json.loads(info)["pid"] > 0 and describe_holder(info) == "alice@laptop (deploy) since now"
    finally:
        first.stdin.close()  # end of input: the holder exits and frees the lock
        first.wait(timeout=5)
    again = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert again.stdout.readline().strip() == "acquired"
    again.stdin.close()
    again.wait(timeout=5)


def test_the_managed_environment_follows_the_inventory():
    from pathlib import Path

    from tasks.cli.deploy import Session, _managed_environment
    from tasks.inventory import parse

    def env(domains):
        inv = parse({"app": {"name": "m", "domains": domains}, "hosts": [{"address": "192.0.2.9"}]}, "x", Path("."))
        return _managed_environment(Session(inv, inv.hosts[0], remote=None, reporter=None))

    with_tls = env(["a.example", "b.example"])
    assert with_tls["DJANGO_ALLOWED_HOSTS"] == "a.example,b.example" and with_tls["DJANGO_HTTPS"] == "1"
    plain = env([])  # no domain, no certificate: the address is the host name, and the app must not force HTTPS
    assert plain["DJANGO_ALLOWED_HOSTS"] == "192.0.2.9" and plain["DJANGO_HTTPS"] == "0"
    assert plain["DJANGO_DB_NAME"] == "m" and plain["DJANGO_MEDIA_ROOT"] == "/srv/m/shared/media"
    assert plain["DATABASE_URL"] == "postgres:///m"  # peer authentication over the local socket


def test_the_state_after_a_deploy_is_derived_without_asking_the_server():
    s = state(good=["r1", "r2"], live="r2", building=["r3"], venvs=["h1"])
    new = Release("r4", GOOD, requirements="h4")
    after = s.after_deploy(new)
    assert after.live == "r4" and sorted(after.releases) == ["r1", "r2", "r4"]  # r3 was cleaned up
    assert after.venvs == ["h1", "h4"] and s.live == "r2"  # the original is left as it was
    assert releases.to_prune(after, keep=2, new_live="r4", previous="r2") == ["r1"]
