"""Builders for the media store (`media`): its credentials file and the check that it answers. Pure."""

from __future__ import annotations

import inspect
import json

from .. import defaults
from ..inventory import Inventory, InventoryError
from ..layout import Layout
from . import programs
from .services import MEDIA_SECRET_VARIABLES, media_keys
from .shell import REPORT, join

# What a key or secret may hold: what providers issue (base64 and URL-safe letters), and what the app's
# environment file holds between double quotes with no escaping.
_KEY_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=._~-")


class MediaKeyError(InventoryError):
    """The store's key or secret in the operator's environment cannot be used."""


def credentials(inventory: Inventory, environ: dict[str, str]) -> str | None:
    """The credentials file's content from the operator's environment; None when neither variable is set (the
    file on the server is kept). Raises MediaKeyError for one without the other, or a value the file cannot hold."""
    media = inventory.media
    names = (media.access_key_env, media.secret_key_env)
    given = [environ.get(name) for name in names]
    if given == [None, None]:
        return None
    for name, other, value in zip(names, reversed(names), given):
        if not value:
            raise MediaKeyError(f"{name} is empty or not set, but {other} is: give both, the store's access key id "
                                "and its secret")
        if set(value) - _KEY_CHARACTERS:
            raise MediaKeyError(f"{name} holds a character no S3 key has (only letters, digits and + / = . _ ~ -): "
                                "check that you copied the key alone")
    return json.dumps(dict(zip(MEDIA_SECRET_VARIABLES, given)), sort_keys=True) + "\n"


def check(inventory: Inventory, require: bool = False) -> str:
    """A signed HEAD of the bucket with the app's key, as root (templates/programs/media_store.py): one report
    line; with `require`, fails unless the store answers 200."""
    media = inventory.media
    return programs.fed(join("python3", "-B", "-c", programs.BOOTSTRAP), "media_store.py",
                        {"credentials": Layout(inventory.app.name).media_credentials, "endpoint": media.endpoint,
                         "bucket": media.bucket, "region": media.region, "timeout": defaults.MEDIA_TIMEOUT_S,
                         "require": require, "report": REPORT},
                        inspect.getsource(media_keys) + "\n" + programs.source("media_store.py"))
