"""python3 -m tests.testhost up|down|list|image|reboot|show|inventory ..."""

import sys

from .host import main

sys.exit(main())
