"""``python -m wmse`` runs the command line (also under torchrun)."""

import sys

from wmse.cli import main

sys.exit(main())
