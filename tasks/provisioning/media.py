"""The media store (`media`): uploads in an existing S3-compatible store, the same for every web server.

The store's access key id and secret are read from the operator's environment (media.access_key_env,
media.secret_key_env) and written to a root-only file on the server, from which the app's environment file
gets AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the step "app environment (services)"). Without them in the
environment the file on the server is kept. Then the store is asked, with that key, for the bucket: it must
answer, or the step fails with what it said (and a new credentials file that fails is taken back).
"""

from __future__ import annotations

import os

from . import Server
from ..commands import media as commands
from ..facts.steps import Change, Check, Facts, File, Probe, Step, path_probe
from .redis import parse_report


def state_probe(server: Server) -> Probe:
    """The store asked for the bucket with the key on the server (commands/media.py `check`)."""
    return Probe("media_store", commands.check(server.inventory), parse_report)


def store(server: Server) -> Step:
    inventory, layout = server.inventory, server.layout
    media = inventory.media
    content = commands.credentials(inventory, dict(os.environ))
    ops = [File(layout.media_credentials, content, mode="600", secret=True)] if content is not None else []
    require = commands.check(inventory, require=True)

    def decide(found: dict | None, facts: Facts) -> list[Change]:
        # Answering already: nothing to do. Not answering: asking again makes the step fail with the store's own
        # words, unless a new credentials file comes first (then `validate` asks with it).
        return [] if found and found["status"] == 200 else [Change(f"{media.endpoint} asked for {media.bucket}",
                                                                   (require,))]

    def note(facts: Facts) -> str:
        found = facts["media_store"] or {"said": "could not be asked"}
        stored = facts[f"path:{layout.media_credentials}"]
        kept = (f"key from {media.access_key_env} in {layout.media_credentials}" if content is not None
                else f"key kept in {layout.media_credentials}" if stored is not None
                else f"no key on the server ({media.access_key_env} and {media.secret_key_env} are not set)")
        return f"bucket {media.bucket} at {media.endpoint} {found['said']}; {kept}"

    return Step("media store", [*ops, Check(state_probe(server), decide)], validate=require, note=note,
                extra_probes=[path_probe(layout.media_credentials)],
                changed_note=f"the store answered {media.bucket} with the app's key",
                hint=f"The key is read from {media.access_key_env} and {media.secret_key_env} in your environment "
                     "when you run `fab provision`; check them, media.endpoint, media.bucket and media.region, and "
                     "that the store lets this server in.")
