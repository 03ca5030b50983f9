"""Provision's media store step (`media`) against a fake server: what it says about the key (given, kept, none),
how a store that refuses or does not answer fails the step in its own words, and `fab status`'s line."""

from __future__ import annotations

import io

import pytest

from tasks import provisioning
from tasks.cli import status
from tasks.facts.steps import PathState
from tasks.commands.media import MediaKeyError
from tasks.inventory import App, Host, Inventory, Media
from tasks.layout import Layout
from tasks.provisioning import media
from tasks.session.runner import Reporter, StepFailed, apply
from tests.orchestration.fake import StepRemote

LAYOUT = Layout("mysite")
INVENTORY = Inventory(App("mysite"), (Host("10.0.0.2"),),
                      media=Media("http://10.0.0.5:8333", "mysite-media", access_key_env="MY_KEY",
                                  secret_key_env="MY_SECRET"))
STORED = PathState("regular file", "600", "root", "root", "0" * 64)
ANSWERS = {"status": 200, "said": "answers: the bucket is there and takes the app's key"}
REFUSES = {"status": 403, "said": "refuses the app's key (403): check the key and secret"}
REFUSAL = "the media store refuses the app's key (403): check the key and secret"


def provision(monkeypatch, facts, key=None, secret=None, refusal=""):
    for name, value in (("MY_KEY", key), ("MY_SECRET", secret)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    step = media.store(provisioning.Server(INVENTORY, INVENTORY.hosts[0], (), lambda: None))
    remote, out = StepRemote(facts, refusal, fails_on="media_store.py"), io.StringIO()
    apply(remote, [step], Reporter(out, terminal=False))
    return out.getvalue(), remote.scripts


def test_a_given_key_is_written_root_only_and_the_store_asked_with_it(monkeypatch):
    said, scripts = provision(monkeypatch, {"media_store": REFUSES}, key="AKIAKEY123", secret="s3cr/et+=")
    assert "changed   media store" in said and "the store answered mysite-media with the app's key" in said
    [script] = scripts
    assert "s3cr/et+=" not in script and "AKIAKEY123" not in script  # base64 on the way, never shown
    assert LAYOUT.media_credentials in script and "chmod 600" in script and "media_store.py" in script


def test_without_the_variables_the_key_on_the_server_is_kept_and_says_so(monkeypatch):
    said, scripts = provision(monkeypatch, {"media_store": ANSWERS, f"path:{LAYOUT.media_credentials}": STORED})
    assert scripts == []
    assert ("ok        media store: bucket mysite-media at http://10.0.0.5:8333 answers: the bucket is there and "
            f"takes the app's key; key kept in {LAYOUT.media_credentials}") in said


def test_without_the_variables_nor_a_key_on_the_server_the_step_fails_saying_where_the_key_comes_from(monkeypatch):
    nothing = {"status": None, "said": f"the credentials file {LAYOUT.media_credentials} cannot be read"}
    with pytest.raises(StepFailed) as failed:
        provision(monkeypatch, {"media_store": nothing}, refusal="the media store the credentials file cannot be read")
    assert "step 'media store' failed" in str(failed.value) and "MY_KEY and MY_SECRET" in str(failed.value)


def test_a_store_that_refuses_the_new_key_fails_the_step_in_its_words(monkeypatch):
    with pytest.raises(StepFailed) as failed:
        provision(monkeypatch, {"media_store": REFUSES, f"path:{LAYOUT.media_credentials}": STORED},
                  key="AKIAKEY123", secret="wrong", refusal=REFUSAL)
    assert "refuses the app's key (403)" in str(failed.value)


@pytest.mark.parametrize("key, secret, words", [
    ("AKIAKEY123", None, "MY_SECRET is empty or not set, but MY_KEY is"),
    (None, "s3cret", "MY_KEY is empty or not set, but MY_SECRET is"),
    ("AKIAKEY123", "", "MY_SECRET is empty or not set"),
    ("AKIA KEY", "s3cret", "MY_KEY holds a character no S3 key has"),
    ("AKIAKEY123", "s3cret\"$(touch pwned)", "MY_SECRET holds a character no S3 key has"),
    ("AKIAKEY123", "s3cret\nX=1", "MY_SECRET holds a character no S3 key has"),
])
def test_a_key_the_file_cannot_hold_is_refused_before_anything_runs(monkeypatch, key, secret, words):
    with pytest.raises(MediaKeyError) as refused:
        provision(monkeypatch, {}, key=key, secret=secret)
    assert words in str(refused.value)


@pytest.mark.parametrize("found, level, words", [
    (ANSWERS, status.OK, "bucket mysite-media at http://10.0.0.5:8333 answers"),
    ({"status": 404, "said": "has no such bucket (404): create it, or fix media.bucket"}, status.FAIL,
     "has no such bucket (404): create it, or fix media.bucket: uploads fail"),
    ({"status": None, "said": "does not answer at http://10.0.0.5:8333: [Errno 111] Connection refused"},
     status.FAIL, "does not answer at http://10.0.0.5:8333: [Errno 111] Connection refused: uploads fail"),
    (status.Unreadable("could not ask the media store (exit 127): python3: not found"), status.FAIL,
     "could not ask the media store (exit 127)"),
])
def test_status_says_whether_the_store_answers(found, level, words):
    line = status.media_check(found, INVENTORY)
    assert (line.level, line.name) == (level, "media store") and words in line.detail, line
