"""A line on stderr when a step is slow, e.g. Numba compiling kernels on first use."""
from __future__ import annotations

import sys
import threading
import time


class SlowStepNotice:
    """`with SlowStepNotice("compiling ..."):` prints the message only if the block is still
    running after `after` seconds (a warm Numba cache loads in about a second), then
    ' done (N s)' when it ends; nothing at all for a fast block."""

    def __init__(self, message: str, after: float = 3.0, stream=None):
        self.message, self.after, self.stream = message, after, stream or sys.stderr
        self._shown = False
        self._lock = threading.Lock()

    def _show(self) -> None:
        with self._lock:
            if not self._done:
                print(self.message + " ...", end="", file=self.stream, flush=True)
                self._shown = True

    def __enter__(self) -> "SlowStepNotice":
        self._done = False
        self._t0 = time.perf_counter()
        self._timer = threading.Timer(self.after, self._show)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        with self._lock:
            self._done = True
            if self._shown:
                print(f" done ({time.perf_counter() - self._t0:.1f} s)", file=self.stream,
                      flush=True)


COMPILING = ("preparing the kernels: Numba compiles them on first use (once; from 30 s to a "
             "few minutes on a busy machine); later runs load them from its cache")
