"""`python -m cellrelay.relay`: the relay's command line."""

import sys

from ._cli import main

sys.exit(main())
