"""``python -m spikegate ...`` (and ``torchrun -m spikegate ...``): the ``spikegate`` command."""

import sys

from spikegate.cli import main

sys.exit(main())
