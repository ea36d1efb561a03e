"""``python -m dli_simulator``: serve until SIGTERM/SIGINT; the base URL is the first line."""

import sys

from dli_simulator.simulator import main

sys.exit(main())
