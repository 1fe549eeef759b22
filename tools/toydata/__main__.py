"""``python -m tools.toydata``: the command line of tools/toydata/cli.py."""
import sys

from tools.toydata.cli import main

sys.exit(main())
