"""Signals end what was started: SIGINT (Ctrl-C) and SIGTERM (a scheduler's kill, ``kill PID``) turned into one
exception, so that every ``finally`` on the way up runs (temp files removed, child process groups stopped) and the
top level ends in one line with exit 128 + the signal number.

    with interruptible():             # the grading scripts (run_cli), the downloader, the pre-submission check
        ...                           # a signal here raises Interrupted (a KeyboardInterrupt) where the code is

Trainers do not use it: their signal finishes the step and saves a checkpoint (``utils.lifecycle.StopRequest``).
Standard library only: the downloader imports it.
"""
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE = 5.0  # seconds a stopped child process group gets between SIGTERM and SIGKILL


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised where the program was (a KeyboardInterrupt, so handlers of Ctrl-C see SIGTERM too);
    ``signum``: which; ``stopped``: what a handler on the way stopped (e.g. the script it ran), for the last line."""

    def __init__(self, signum: int) -> None:
        super(Interrupted, self).__init__(signum)
        self.signum, self.stopped = int(signum), None  # type: int, Optional[str]

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum: int, frame: Any) -> None:
    for sig in STOP_SIGNALS:  # the clean-up runs once: a second signal waits for it (the clean-up is bounded)
        signal.signal(sig, signal.SIG_IGN)
    quiet_teardown()
    raise Interrupted(signum)


def quiet_teardown() -> None:
    """After a stop signal (and in DataLoader workers, whose peer may end at any time): a helper thread's broken
    connection -- workers ended mid-transfer, multiprocessing's resource sharer reporting it through
    ``sys.excepthook`` -- is part of the teardown, not news: not printed. Anything else is, as before."""
    default_thread, default_sys = threading.excepthook, sys.excepthook

    def thread_hook(args: Any) -> None:
        if not issubclass(args.exc_type, (ConnectionError, EOFError)):
            default_thread(args)

    def sys_hook(exc_type: Any, value: Any, tb: Any) -> None:
        if not issubclass(exc_type, (ConnectionError, EOFError)):
            default_sys(exc_type, value, tb)

    threading.excepthook, sys.excepthook = thread_hook, sys_hook


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Interrupted`` inside the block (main thread only: elsewhere nothing changes); the
    previous handlers (and exception hooks) come back after it."""
    previous = {}  # type: Dict[int, Any]
    hooks = threading.excepthook, sys.excepthook
    if threading.current_thread() is threading.main_thread():  # handlers can only be set there
        previous = {sig: signal.signal(sig, _raise) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        threading.excepthook, sys.excepthook = hooks


def stop_group(proc: subprocess.Popen, grace: float = GRACE) -> None:
    """Stop the process group ``proc`` leads (started with ``start_new_session=True``): SIGTERM, then SIGKILL to what
    is left once ``proc`` ended or after ``grace`` s; ``proc`` is reaped last, so that its group id cannot be reused
    before the SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.time() + grace
        while sig == signal.SIGTERM and time.time() < deadline and \
                os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            time.sleep(0.05)
    proc.wait()


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A DataLoader worker's init: ignore SIGINT and SIGTERM. A signal to the whole process group (Ctrl-C in a
    terminal, a scheduler's SIGTERM) is the main process's to act on (a trainer saves, inference stops cleanly); a
    worker that died of it would end the run in a DataLoader error instead. The loader ends its workers itself."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    quiet_teardown()  # its helper threads lose their peer when the main process ends
