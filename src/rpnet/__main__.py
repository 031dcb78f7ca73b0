"""``python -m rpnet`` (and so ``torchrun -m rpnet``) is the ``rpnet`` command."""

import sys

from .cli import main

sys.exit(main())
