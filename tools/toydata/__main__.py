"""``python -m tools.toydata``: the command line (``main``) of the package."""
import sys

from tools.toydata import main

sys.exit(main())
