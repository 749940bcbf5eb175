"""``python -m ninlab.cli ...``: the same as the ``ninlab`` command."""

import sys

from ninlab.cli.main import main

sys.exit(main())
