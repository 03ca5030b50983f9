"""Render the Jinja2 templates in templates/ into config file contents: pure, so unit tests can check them."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
HEADER = "Written by gangway from templates/{name}; edits here are replaced on the next provision."


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
                       keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)


def render(name: str, **values) -> str:
    """templates/NAME rendered with `values`; a missing value is an error, never an empty string."""
    return _environment().get_template(name).render(header=HEADER.format(name=name), **values)
