"""`media`: the inventory's checks, the app's environment, the credentials file and its reader, and the store
check run here against a local HTTP server, its signature compared with the AWS SDK's."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tasks import defaults
from tasks.commands import media, release, services, shell
from tasks.commands.services import media_keys
from tasks.inventory import InventoryError, Media, parse
from tasks.layout import Layout
from tasks.project.django import managed_environment

HOSTILE = ["$(touch pwned)", "a'b", 'a"b', "a\nb", "`id`", "a b", "a;b"]
KEY, SECRET = "AKIAKEY1234567890", "s3cr/et+base64=="


def inventory(tmp_path, **media_keys_):
    return parse({"app": {"name": "mysite"}, "hosts": [{"address": "10.0.0.2"}], "media": media_keys_},
                 "production.yaml", tmp_path)


def refused(tmp_path, **media_keys_) -> str:
    with pytest.raises(InventoryError) as error:
        inventory(tmp_path, **media_keys_)
    return str(error.value)


def test_a_media_section_with_its_defaults_and_the_endpoints_slash_dropped(tmp_path):
    inv = inventory(tmp_path, endpoint="https://s3.example.com/", bucket="mysite-media")
    assert inv.media == Media("https://s3.example.com", "mysite-media", defaults.MEDIA_REGION,
                              defaults.MEDIA_ACCESS_KEY_ENV, defaults.MEDIA_SECRET_KEY_ENV)


@pytest.mark.parametrize("key", ["endpoint", "bucket", "region", "access_key_env", "secret_key_env"])
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_are_refused_naming_the_key(tmp_path, key, value):
    keys = {"endpoint": "http://10.0.0.5:8333", "bucket": "mysite-media", key: value}
    assert f"media.{key}" in refused(tmp_path, **keys)


@pytest.mark.parametrize("keys, words", [
    ({"bucket": "b-1"}, "media.endpoint: is missing"),
    ({"endpoint": "http://h"}, "media.bucket: is missing"),
    ({"endpoint": "ftp://h", "bucket": "b-1"}, "must start with http:// or https://"),
    ({"endpoint": "http://k:s@h", "bucket": "b-1"}, "must not contain a user name or password"),
    ({"endpoint": "http://h/bucket", "bucket": "b-1"}, "must not have a path"),
    ({"endpoint": "http://h", "bucket": "My_Bucket"}, "is not a bucket name"),
    ({"endpoint": "http://h", "bucket": "10.0.0.1"}, "is not a bucket name"),
    ({"endpoint": "http://h", "bucket": "b-1", "secret": "x"}, "media.secret: unknown key"),
])
def test_mistakes_say_which_key_and_the_fix(tmp_path, keys, words):
    assert words in refused(tmp_path, **keys)


def test_the_app_gets_the_stores_names_and_never_the_key_from_the_inventory(tmp_path):
    inv = inventory(tmp_path, endpoint="http://10.0.0.5:8333", bucket="mysite-media", region="eu-1")
    env = managed_environment(inv.app, "10.0.0.2", None, media=inv.media)
    assert {k: env[k] for k in env if k.startswith("AWS_")} == {
        "AWS_STORAGE_BUCKET_NAME": "mysite-media", "AWS_S3_ENDPOINT_URL": "http://10.0.0.5:8333",
        "AWS_S3_REGION_NAME": "eu-1"}
    assert not any(k.startswith("AWS_") for k in managed_environment(inv.app, "10.0.0.2"))
    assert services.env_services(inv) == {"media": Layout("mysite").media_credentials}
    # app.env may not set what gangway manages.
    assert "is set by gangway itself" in str(pytest.raises(InventoryError, parse, {
        "app": {"name": "mysite", "env": {"AWS_SECRET_ACCESS_KEY": "x"}}}, "p.yaml", tmp_path).value)


def test_the_credentials_come_from_the_operators_environment_as_json(tmp_path):
    inv = inventory(tmp_path, endpoint="http://h", bucket="b-1", access_key_env="K", secret_key_env="S")
    assert media.credentials(inv, {}) is None
    assert json.loads(media.credentials(inv, {"K": KEY, "S": SECRET})) == {
        "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}


def write_keys(tmp_path, keys, mode=0o600):
    path = tmp_path / "media-credentials.json"
    path.write_text(json.dumps(keys))
    os.chmod(path, mode)
    return str(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="the file must be root's")
def test_the_reader_takes_only_the_two_keys_root_only(tmp_path):
    good = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    assert media_keys(write_keys(tmp_path, good)) == (good, None)
    assert "not root's alone (mode 644)" in media_keys(write_keys(tmp_path, good, 0o644))[1]
    assert "cannot be read" in media_keys(str(tmp_path / "missing"))[1]
    for bad in ({**good, "AWS_SECRET_ACCESS_KEY": 'x"$(id)'}, {"AWS_ACCESS_KEY_ID": KEY}, ["x"],
                {**good, "AWS_ACCESS_KEY_ID": "a\nb"}):
        assert "does not hold the two keys" in media_keys(write_keys(tmp_path, bad))[1]


@pytest.mark.skipif(os.geteuid() != 0, reason="the file must be root's")
def test_the_environment_file_gets_the_keys_from_the_file_on_the_server(tmp_path):
    path = write_keys(tmp_path, {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET})
    layout = Layout("mysite")
    env = tmp_path / "env"
    env.write_text("DJANGO_SECRET_KEY='k'\n")
    command = release.env_file(layout, {"A": "1"}, services={"media": path}).replace(layout.env_file, str(env))
    assert SECRET not in command
    out = subprocess.run(["sh"], input=shell.script(command), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f'AWS_SECRET_ACCESS_KEY="{SECRET}"' in env.read_text() and f'AWS_ACCESS_KEY_ID="{KEY}"' in env.read_text()


class FakeStore(BaseHTTPRequestHandler):
    """Answers HEAD with `status`, recording the request."""
    status, seen = 200, []

    def do_HEAD(self):
        FakeStore.seen.append((self.path, dict(self.headers)))
        self.send_response(FakeStore.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def store():
    server = HTTPServer(("127.0.0.1", 0), FakeStore)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeStore.seen = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def run_check(tmp_path, endpoint, require=False, keys=None):
    inv = inventory(tmp_path, endpoint=endpoint, bucket="mysite-media", region="eu-1")
    path = write_keys(tmp_path, keys or {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET})
    command = media.check(inv, require).replace(Layout("mysite").media_credentials, path)
    assert SECRET not in command and KEY not in command
    out = subprocess.run(["sh"], input=shell.script(command), capture_output=True, text=True, timeout=60,
                         env={**os.environ, "http_proxy": "http://192.0.2.1:9"})  # never through a proxy
    return out, shell.parse_reports(out.stdout)


@pytest.mark.skipif(os.geteuid() != 0, reason="the file must be root's")
def test_the_check_signs_a_head_of_the_bucket_as_the_aws_sdk_does(tmp_path, store):
    out, report = run_check(tmp_path, store)
    assert report == {"status": 200, "said": "answers: the bucket is there and takes the app's key"}, out.stderr
    [(path, headers)] = FakeStore.seen
    assert path == "/mysite-media" and SECRET not in json.dumps(headers)
    request = AWSRequest("HEAD", store + path, headers={"x-amz-content-sha256": headers["x-amz-content-sha256"]})
    request.context["timestamp"] = headers["x-amz-date"]
    SigV4Auth(Credentials(KEY, SECRET), "s3", "eu-1").add_auth(request)
    assert headers["Authorization"] == request.headers["Authorization"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the file must be root's")
@pytest.mark.parametrize("code, words", [(403, "refuses the app's key (403)"), (404, "has no such bucket (404)"),
                                         (500, "answers 500, not 200")])
def test_a_refusal_is_said_and_with_require_fails(tmp_path, store, code, words):
    FakeStore.status = code
    try:
        out, report = run_check(tmp_path, store)
        assert out.returncode == 0 and report["status"] == code and words in report["said"]
        out, _ = run_check(tmp_path, store, require=True)
        assert out.returncode == 1 and f"the media store {words}" in out.stderr
    finally:
        FakeStore.status = 200


@pytest.mark.skipif(os.geteuid() != 0, reason="the file must be root's")
def test_a_store_that_does_not_answer_is_said(tmp_path):
    out, report = run_check(tmp_path, "http://127.0.0.1:9")
    assert report["status"] is None and report["said"].startswith("does not answer at http://127.0.0.1:9: ")
