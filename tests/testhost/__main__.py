"""python3 -m tests.testhost up|down|list|reboot|show|inventory|image ..."""

import sys

from .cli import main

sys.exit(main())
