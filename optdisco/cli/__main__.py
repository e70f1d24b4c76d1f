"""``python -m optdisco.cli``: the ``optdisco`` command."""

import sys

from . import main

sys.exit(main())
