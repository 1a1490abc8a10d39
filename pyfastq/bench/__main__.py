"""python -m pyfastq.bench: the same as `pyfastq bench`."""

import sys

from .run import main

sys.exit(main())
