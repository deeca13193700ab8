"""`python -m pipeline` is `conversions`."""

import sys

from pipeline.cli import main

sys.exit(main())
