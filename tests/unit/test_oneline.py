"""The one test for "a value on one line" (tasks/oneline.py): what it finds, how it says it, and that no other
module carries its own copy of the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.oneline import control_problem, first_control

TASKS = Path(__file__).resolve().parents[2] / "tasks"


@pytest.mark.parametrize("value, found", [
    ("a\nb", (2, "\n")), ("\r", (1, "\r")), ("x\u2028", (2, "\u2028")), ("tab\there", (4, "\t")),
    ("esc\x1b[2J", (4, "\x1b")), ("/\u200bhealthz", (2, "\u200b")), ("rtl\u202e", (4, "\u202e")),
    ("nul\x00", (4, "\x00")), ("nbsp\u00a0", (5, "\u00a0")),
])
def test_line_breaks_and_control_characters_are_found_where_they_are(value, found):
    assert first_control(value) == found


@pytest.mark.parametrize("value", ["", "plain", "  spaces  ", "caf\u00e9 \u2603", "$(id) `x` 'q' \"d\" \\"])
def test_printable_text_on_one_line_passes(value):
    assert first_control(value) is None and control_problem(value) is None


def test_the_finding_names_the_kind_and_the_place():
    assert control_problem("a\nb") == "contains a line break ('\\n' at position 2)"
    assert control_problem("a\tb") == "contains an invisible control character ('\\t' at position 2)"


def test_no_other_module_has_its_own_copy_of_the_rule():
    rule = '"Cc", "Cf", "Zl", "Zp"'
    found = [str(path.relative_to(TASKS.parent)) for path in sorted(TASKS.rglob("*.py"))
             if path != TASKS / "oneline.py" and rule in path.read_text()]
    assert found == []
