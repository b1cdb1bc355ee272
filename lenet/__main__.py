"""`python -m lenet ...` runs the `lenet` command."""

import sys

from lenet.cli import main

sys.exit(main())
