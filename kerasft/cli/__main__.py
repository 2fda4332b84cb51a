"""`python -m kerasft.cli ...`: the same as the `kerasft` command."""

import sys

from kerasft.cli import main

sys.exit(main())
