"""``python -m rlpipe <command>`` = ``rlpipe <command>``."""

import sys

from rlpipe.cli import main

sys.exit(main())
