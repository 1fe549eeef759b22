"""Shared code for the HW1 scripts: datasets, transforms, metrics, models, checkpoints, distributed helpers."""
import os
import sys

if os.environ.get("MUTANT_UNDER_TEST"):  # mutation testing only (docs/development.md; setup.cfg leaves this file be)
    # mutmut names a script's functions `p2_inference.x_main...`; run as a script (or -m), that module is `__main__`
    _argv = getattr(sys, "orig_argv", [])
    _main = getattr(sys.modules.get("__main__"), "__file__", None) or ""
    _name = _argv[_argv.index("-m") + 1] if "-m" in _argv[:-1] else os.path.splitext(os.path.basename(_main))[0]
    # mutmut reads its setup.cfg from the working folder, and a test may start a script from another one: read it
    # once from the tree this package sits in (mutmut keeps it)
    _cwd = os.getcwd()
    os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        from mutmut.configuration import config as _mutmut_config
        _mutmut_config()
    finally:
        os.chdir(_cwd)
    if _name and os.environ["MUTANT_UNDER_TEST"].startswith(_name + "."):  # a mutant of this script: run it here
        from mutmut.mutation import trampoline  # (only here: a script it starts gets the plain code)
        trampoline._mutant_under_test = "__main__." + os.environ.pop("MUTANT_UNDER_TEST")[len(_name) + 1:]
    if os.environ.get("HW1_MUTMUT_HITS"):  # mapping the tests: tell the test which functions this process reached
        import atexit

        def _report_mutmut_hits(name: str = _name) -> None:
            from mutmut.state import state
            hits = [name + n[8:] if n.startswith("__main__.") else n for n in state()._stats]
            with open(os.environ["HW1_MUTMUT_HITS"], "a") as f:
                f.write("".join(n + "\n" for n in hits))

        atexit.register(_report_mutmut_hits)
