"""The environment files systemd reads: one writer, one reader (tasks/commands/envfile.py), used by the
deploy's shared/env, `fab config`, the dry run's preview and the size check on the server."""

from __future__ import annotations

import subprocess

import pytest

from tasks.commands import envfile
from tasks.commands import release as commands
from tasks.layout import Layout

HOSTILE = ["plain", "it's \"quoted\"", "$(touch CANARY) `id` $HOME ${X}", "back\\slash\\", "\\n \\$ \\\"",
           "  spaces  ", "", "caf\u00e9 = \u2603", "#not a comment", "a=b=c", "'single'", "%i %h", ";x"]


@pytest.mark.parametrize("value", HOSTILE)
def test_every_value_reads_back_as_written(value):
    line = envfile.encode_line("V", value)
    assert "\n" not in line and envfile.parse(line + "\n") == {"V": value}


def test_inside_the_double_quotes_only_what_systemd_unescapes_is_escaped():
    """systemd's EnvironmentFile parser, inside double quotes, takes \\ before " \\ ` $ as escapes and keeps
    any other backslash; it expands nothing (the integration test reads such values back from the app)."""
    assert envfile.encode_line("V", 'a"b\\c`d$e f') == 'V="a\\"b\\\\c\\`d\\$e f"'


@pytest.mark.parametrize("value", ["a\nB=c", "a\rb", "a\u2028b", "tab\there", "esc\x1b[2J"])
def test_a_value_that_is_not_one_line_is_refused_naming_it(value):
    with pytest.raises(ValueError, match="line break|control character"):
        envfile.encode_line("V", value)
    assert "one line of text" in envfile.value_problem(value)


def test_the_reader_follows_systemd_for_lines_gangway_did_not_write():
    text = ("# a comment\n; another\n\nNOLINE\nA='it''s'\nB = plain  \nC=\"a\\qb\\$\"\nD=un\\ quoted\n"
            "E='$(id) \\n'\nA2=\"x\" 'y'z\nF=a'b' \nG=\\ lead\nB=later wins\n")
    assert envfile.parse(text) == {"A": "its", "B": "later wins", "C": "a\\qb$", "D": "un quoted",
                                   "E": "$(id) \\n", "A2": "xyz", "F": "a'b'", "G": " lead"}


def test_the_reader_sent_to_the_server_is_the_same_reader():
    names: dict = {}
    exec(envfile.reader_source(), names)
    text = "".join(envfile.encode_line(f"V{i}", value) + "\n" for i, value in enumerate(HOSTILE))
    assert names["parse"](text) == envfile.parse(text) == {f"V{i}": value for i, value in enumerate(HOSTILE)}


def test_the_deploy_writes_hostile_managed_values_that_read_back_exactly(tmp_path):
    layout, env = Layout("m"), tmp_path / "env"
    env.write_text("OPERATOR='mine'\n")
    managed = {f"V{i}": value for i, value in enumerate(HOSTILE)}
    script = commands.env_file(layout, managed).replace(layout.env_file, str(env))
    subprocess.run(["sh", "-c", script], check=True, cwd=tmp_path)
    read = envfile.parse(env.read_text())
    assert {k: read[k] for k in managed} == managed and read["OPERATOR"] == "mine"
    assert not list(tmp_path.glob("CANARY*")) and len(read["DJANGO_SECRET_KEY"]) > 60
