"""Throwaway Debian servers on this machine, for integration tests (see host.py)."""

from .host import *  # noqa: F401,F403
from .host import _alive  # noqa: F401  (tests check that processes are gone)
