"""Run shellcheck on a script gangway generates, and fail the test with its findings.

    from tests.unit.shellcheck import assert_shellcheck_clean
    assert_shellcheck_clean(step.script(changes))                  # every finding fails
    assert_shellcheck_clean(probe.command, exclude=("SC2046",))     # ...apart from ones intended here

The scripts run with /bin/sh on the server (dash on Debian), so they are checked as POSIX sh. shellcheck
(Debian package `shellcheck`, which .ci/run installs) must be there: without it the test fails, it does not
skip, because a skipped check looks like a passing one.

`exclude` takes codes (SC2046) that are intended in that one script; say why next to the call. Findings that
every generated script has by design are listed in INTENDED below, each tied to the line shape it is about,
so the same code elsewhere is still reported.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

# (code, a pattern the finding's line matches, why it is intended)
INTENDED = [
    # tasks.commands.shell.script keeps each command's first line, in single quotes, to name the one that failed: it is
    # printed as it was written, never expanded. Both shapes: an echo after `||`, or a `gw_line=` assignment.
    ("SC2016", re.compile(r"^\} \|\| \{ s=\$\?; echo '.*' >&2; exit \$s; \}$"), "a failed command's text"),
    ("SC2016", re.compile(r"^gw_step=\S.*; gw_line='.*'$"), "a failed command's text"),
]


def shellcheck_findings(script: str, exclude=()) -> list[dict]:
    """shellcheck's findings for `script` as sh, minus `exclude` codes and the INTENDED ones."""
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.fail("shellcheck is not installed: `apt-get install shellcheck` (bash .ci/run installs it); "
                    "the generated scripts cannot be checked without it", pytrace=False)
    args = [exe, "--shell=sh", "--format=json1", "--severity=style"]
    codes = sorted({str(c).upper().removeprefix("SC") for c in exclude})
    if codes:
        args.append("--exclude=" + ",".join(codes))
    result = subprocess.run([*args, "-"], input=script, capture_output=True, text=True, timeout=60)
    if result.returncode not in (0, 1) or not result.stdout.strip():
        raise AssertionError(f"shellcheck could not check the script (exit {result.returncode}): {result.stderr}")
    lines = script.splitlines()
    findings = []
    for finding in json.loads(result.stdout)["comments"]:
        line = lines[finding["line"] - 1] if 0 < finding["line"] <= len(lines) else ""
        code = f"SC{finding['code']}"
        if any(code == c and pattern.search(line) for c, pattern, _ in INTENDED):
            continue
        findings.append({**finding, "code": code, "text": line})
    return findings


def assert_shellcheck_clean(script: str, exclude=()) -> None:
    """Fail with each finding next to its line unless shellcheck finds nothing in `script` (run as sh)."""
    findings = shellcheck_findings(script, exclude)
    if findings:
        report = "\n".join(f"line {f['line']}:{f['column']} {f['code']} ({f['level']}): {f['message']}\n"
                           f"    {f['text']}" for f in findings)
        numbered = "\n".join(f"{i:4} {line}" for i, line in enumerate(script.splitlines(), 1))
        raise AssertionError(f"shellcheck found {len(findings)} problem(s) in the generated script:\n{report}\n"
                             f"--- the script:\n{numbered}")
