"""The two beginner projects kept as test data in tests/data, untouched, as their authors left them.

- tests/data/djangogirls: the Django Girls tutorial's finished blog (https://tutorial.djangogirls.org): the
  settings startproject wrote with the tutorial's edits (a secret key in the code, DEBUG on, SQLite,
  STATIC_ROOT in the project), a media folder with the logo its base template shows, no requirements file,
  and db.sqlite3 (ignored by its own .gitignore, as in the tutorial) holding three published posts and a draft.
- tests/data/polls: Django's polls tutorial, parts 1 to 7, finished: default settings, two questions with
  their choices in db.sqlite3, no requirements file.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Beginner:
    directory: str           # under tests/data
    home: str                # the page that lists what the database holds
    shown: tuple[str, ...]   # what that page shows from the database
    hidden: tuple[str, ...]  # what the database holds that the page must not show
    static: str              # a static file its pages link to

    def copy(self, destination: Path) -> Path:
        """A copy of the project at DESTINATION (its database and media included), as on its author's laptop."""
        shutil.copytree(DATA / self.directory, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return destination


BLOG = Beginner("djangogirls", "/",
                shown=("My first post on the Django Girls blog", "Templates, querysets and a dash of CSS",
                       "Forms! Now I can write posts without the admin"),
                hidden=("A draft nobody sees yet",),
                static="/static/css/blog.css")
POLLS = Beginner("polls", "/polls/",
                 shown=("What's new?", "Which pony should deploy our polls?"),
                 hidden=(),
                 static="/static/polls/style.css")
PROJECTS = (BLOG, POLLS)
