"""`python -m keyrouter.cli`: the same as the `keyrouter` command."""

import sys

from keyrouter.cli.main import main

sys.exit(main())
