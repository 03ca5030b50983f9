"""What the unit tests need beyond the Python packages (README, Tests): a missing shellcheck fails the tests
that check generated scripts, naming the package; it never skips them, since a skipped check looks passed."""

from __future__ import annotations

import shutil

import pytest

from tests.unit import shellcheck


def test_without_shellcheck_a_script_check_fails_naming_the_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    with pytest.raises(pytest.fail.Exception) as failed:
        shellcheck.assert_shellcheck_clean("true\n")
    assert "apt-get install shellcheck" in str(failed.value)


def test_the_programs_the_readme_names_are_the_ones_the_unit_tests_run():
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("`python3 -m pytest tests/unit` runs only the"):][:1500]
    for program in ("shellcheck", "git", "sh", "flock", "ssh-keygen", "systemd-analyze", "apt-config"):
        assert f"`{program}`" in section, program
