"""The runner against a fake server: one gather when nothing changes, a fresh gather after each change."""

import io

import pytest

from tasks.connection.remote import Result
from tasks.session.runner import Reporter, StepFailed, apply
from tasks.facts.steps import Change, Check, Probe, Step


class FakeRemote:
    """Answers gathers from a dict of facts, records every script it is asked to run."""

    class connection:
        host = "fake"

    def __init__(self, facts, fail_on=None):
        self.facts = facts
        self.gathers = []
        self.scripts = []
        self.fail_on = fail_on

    def gather(self, probes):
        probes = list(probes)
        self.gathers.append([p.key for p in probes])
        return {p.key: self.facts[p.key] for p in probes}

    def run(self, script):
        self.scripts.append(script)
        if self.fail_on and self.fail_on in script:
            return Result("", "boom: it broke", 1)
        for key in self.facts:  # the change "happens"
            if f"fix {key}" in script:
                self.facts[key] = "good"
        return Result("", "", 0)


def wants_good(key):
    return Check(Probe(key, f"probe {key}"),
                 lambda value, facts: [] if value == "good" else [Change(f"{key} fixed", (f"fix {key}",))])


def test_nothing_to_change_costs_one_gather_and_no_commands():
    remote = FakeRemote({"a": "good", "b": "good"})
    out = io.StringIO()
    recap = apply(remote, [Step("A", [wants_good("a")]), Step("B", [wants_good("b")])], Reporter(out))
    assert recap.changed == [] and recap.unchanged == ["A", "B"]
    assert len(remote.gathers) == 1 and remote.scripts == []
    assert "ok        A" in out.getvalue()


def test_after_a_change_the_remaining_steps_are_probed_again():
    remote = FakeRemote({"a": "bad", "b": "good"})
    out = io.StringIO()
    recap = apply(remote, [Step("A", [wants_good("a")], changed_note="from the next start"),
                           Step("B", [wants_good("b")])], Reporter(out))
    assert recap.changed == ["A"] and remote.gathers == [["a", "b"], ["b"]]
    assert "changed   A: a fixed (from the next start)" in out.getvalue()


def test_a_failing_step_stops_the_run_with_its_output_and_hint():
    remote = FakeRemote({"a": "bad", "b": "bad"}, fail_on="fix a")
    with pytest.raises(StepFailed) as caught:
        apply(remote, [Step("A", [wants_good("a")], hint="check DNS"), Step("B", [wants_good("b")])],
              Reporter(io.StringIO()))
    assert "boom: it broke" in str(caught.value) and "check DNS" in str(caught.value)
    assert not any("fix b" in s for s in remote.scripts)


def test_before_runs_only_when_there_is_something_to_change():
    calls = []
    remote = FakeRemote({"a": "good"})
    apply(remote, [Step("A", [wants_good("a")], before=lambda: calls.append(1))], Reporter(io.StringIO()))
    assert calls == []
    remote = FakeRemote({"a": "bad"})
    apply(remote, [Step("A", [wants_good("a")], before=lambda: calls.append(1))], Reporter(io.StringIO()))
    assert calls == [1]


def test_a_change_that_breaks_new_logins_is_undone():
    def refuse():
        raise RuntimeError("connection refused")
    remote = FakeRemote({"a": "bad"})
    with pytest.raises(StepFailed, match="undone"):
        apply(remote, [Step("A", [wants_good("a")], confirm=refuse, undo="nft flush ruleset")],
              Reporter(io.StringIO()))
    assert remote.scripts[-1] == "nft flush ruleset"
