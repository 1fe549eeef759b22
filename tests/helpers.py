"""Helpers shared by the tests (this folder is on sys.path while pytest runs them)."""
from types import ModuleType
from typing import Any, List


def run_main(script: ModuleType, argv: List[Any]) -> Any:
    """Run a script's ``main`` in process, as its command line would, with exceptions left to the test."""
    return script.main(script.get_args_parser().parse_args([str(a) for a in argv]))
