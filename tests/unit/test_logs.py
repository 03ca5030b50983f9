"""`fab logs` without a server: the command it builds passes shellcheck, operator values are checked before
anything is sent, and a hostile --grep text reaches journalctl or grep as one literal argument."""

from __future__ import annotations

import pytest

from tasks.cli import logs
from tasks.cli.logs import LogsError, logs_command
from tests.unit.shellcheck import assert_shellcheck_clean
from tests.unit.test_release_commands import HOSTILE, LAYOUT, run

RECORD = 'printf "%s\\0" "$@" > args'


def _args(tmp_path) -> list[str]:
    return (tmp_path / "args").read_text().split("\0")[:-1]


@pytest.mark.parametrize("options", [
    {}, {"follow": True}, {"since": "1 hour ago", "level": "err", "grep": "x"},
    {"nginx": True}, {"nginx": True, "follow": True, "grep": "GET /"},
], ids=["journal", "follow", "filtered", "nginx", "nginx follow grep"])
def test_every_logs_command_passes_shellcheck(options):
    assert_shellcheck_clean(logs_command(LAYOUT, **options))


def test_the_journal_of_every_instance_of_the_app():
    argv = logs_command(LAYOUT, lines=20, follow=True)
    assert argv == "journalctl --no-pager --output=short-iso --unit 'mysite@*.service' --lines 20 --follow"


@pytest.mark.parametrize("since", ["1 hour ago", "30 min ago", "2 days ago", "-1h", "today", "yesterday",
                                   "2026-11-27", "2026-11-27 10:00", "2026-11-27 10:00:05", "10:00"])
def test_journalctl_s_time_words_are_accepted(since):
    assert f"--since '{since}'" in logs_command(LAYOUT, since=since) or f"--since {since}" in logs_command(
        LAYOUT, since=since)


@pytest.mark.parametrize("value", HOSTILE + ["1 hour ago\n", "1 hour ago; touch CANARY", "", "2026-11-27 10:00x"])
def test_a_hostile_since_or_level_is_refused_before_anything_is_sent(value):
    with pytest.raises(LogsError, match="--since"):
        logs_command(LAYOUT, since=value)
    with pytest.raises(LogsError, match="--level"):
        logs_command(LAYOUT, level=value)


@pytest.mark.parametrize("value", ["-1", "ten", "1; touch CANARY", None])
def test_lines_must_be_a_number(value):
    with pytest.raises(LogsError, match="--lines"):
        logs_command(LAYOUT, lines=value)


def test_levels_are_journal_priorities():
    assert "--priority err" in logs_command(LAYOUT, level="err")
    assert "--priority 3" in logs_command(LAYOUT, level="3")
    with pytest.raises(LogsError):
        logs_command(LAYOUT, level="error")


def test_since_and_level_do_not_apply_to_nginx_s_files():
    with pytest.raises(LogsError, match="--since and --level"):
        logs_command(LAYOUT, nginx=True, since="today", level="err")


@pytest.mark.parametrize("nginx", [False, True], ids=["journal", "nginx"])
@pytest.mark.parametrize("follow", [False, True], ids=["recent", "follow"])
@pytest.mark.parametrize("value", [v for v in HOSTILE if "\n" not in v] + ["it's \"quoted\"", "a.b*c[d]", "-v"])
def test_a_hostile_grep_text_reaches_grep_as_one_fixed_string(tmp_path, value, follow, nginx):
    out = run(logs_command(LAYOUT, grep=value, follow=follow, nginx=nginx), tmp_path,
              {"tail": "cat", "journalctl": "echo line", "grep": RECORD})
    assert out.returncode == 0 and not (tmp_path / "CANARY").exists()
    args = _args(tmp_path)
    assert args[args.index("-e") + 1] == value and "-F" in args and "-i" in args


def test_grep_keeps_the_last_matching_lines_in_time_order():
    assert logs_command(LAYOUT, grep="x", lines=5).endswith(" | grep --line-buffered -i -F -e x | tail -n 5")
    assert "--lines" not in logs_command(LAYOUT, grep="x", lines=5)
    assert logs_command(LAYOUT, grep="x", nginx=True, lines=5) == (
        "grep --line-buffered -i -F -e x -- " + " ".join(logs.NGINX_LOGS) + " | tail -n 5")


@pytest.mark.parametrize("value", ["a\ntouch CANARY", "\r", "x\0y", ""])
def test_a_grep_text_is_one_line(value):
    with pytest.raises(LogsError, match="--grep"):
        logs_command(LAYOUT, grep=value)


def test_nginx_logs_are_tailed_and_followed():
    assert logs_command(LAYOUT, nginx=True, lines=5, follow=True) == (
        "tail -n 5 -F " + " ".join(logs.NGINX_LOGS))
