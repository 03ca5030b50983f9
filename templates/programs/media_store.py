# The media store as the app sees it, read as root: `fab provision` and `fab status` (tasks/commands/media.py).
# Run after the credentials file's reader (tasks/commands/services.py `media_keys`).
# Input: {"credentials": the root-only credentials file, "endpoint": "http[s]://host[:port]", "bucket": ...,
#         "region": ..., "timeout": seconds, "require": bool, "report": "@gangway"}.
# Sends one HEAD request for the bucket, signed with the app's key (AWS Signature Version 4: the secret itself
# never leaves the server), straight to the endpoint (no proxy), checking an https endpoint's certificate
# against the system's CA store. Prints one report line: {"status": the HTTP status or null, "said": what
# that means, in words}. With "require", exits 1 (saying why on stderr) unless the store answers 200.
import datetime
import hashlib
import hmac
import http.client
import json
import ssl
import sys
from urllib.parse import urlsplit

args = json.load(sys.stdin)
EMPTY = hashlib.sha256(b"").hexdigest()


def sign(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def headers(keys, host, path, now):
    """The headers of a signed HEAD request with no body."""
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    signed = "host;x-amz-content-sha256;x-amz-date"
    request = "\n".join(["HEAD", path, "", "host:" + host, "x-amz-content-sha256:" + EMPTY,
                         "x-amz-date:" + stamp, "", signed, EMPTY])
    scope = "%s/%s/s3/aws4_request" % (day, args["region"])
    text = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(request.encode()).hexdigest()])
    key = ("AWS4" + keys["AWS_SECRET_ACCESS_KEY"]).encode()
    for part in (day, args["region"], "s3", "aws4_request"):
        key = sign(key, part)
    signature = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    return {"Host": host, "x-amz-content-sha256": EMPTY, "x-amz-date": stamp,
            "Authorization": "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s"
                             % (keys["AWS_ACCESS_KEY_ID"], scope, signed, signature)}


MEANING = {200: "answers: the bucket is there and takes the app's key",
           301: "says the bucket is in another region: set media.region",
           400: "refuses the request (400): check media.region and that the endpoint speaks S3",
           403: "refuses the app's key (403): check the key and secret, and that they may use this bucket",
           404: "has no such bucket (404): create it, or fix media.bucket"}

out = {"status": None, "said": ""}
keys, problem = media_keys(args["credentials"])
if problem:
    out["said"] = "the credentials file %s %s" % (args["credentials"], problem)
else:
    url = urlsplit(args["endpoint"])
    path = "/" + args["bucket"]
    try:
        if url.scheme == "https":
            conn = http.client.HTTPSConnection(url.netloc, timeout=args["timeout"],
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(url.netloc, timeout=args["timeout"])
        conn.request("HEAD", path, headers=headers(keys, url.netloc, path, datetime.datetime.now(datetime.timezone.utc)))
        out["status"] = conn.getresponse().status
        out["said"] = MEANING.get(out["status"], "answers %d, not 200" % out["status"])
    except (OSError, http.client.HTTPException) as error:
        out["said"] = "does not answer at %s: %s" % (args["endpoint"], error)
print(args["report"] + " " + json.dumps(out))
if args["require"] and out["status"] != 200:
    sys.exit("the media store %s" % out["said"])
