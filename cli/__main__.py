"""``python -m cli ...``: the same as the ``imagine`` command."""

import sys

from cli.main import main

sys.exit(main())
