"""``python -m torchgp``: the ``torchgp`` command (see :mod:`torchgp.cli`)."""

import sys

from torchgp.cli import main

sys.exit(main())
