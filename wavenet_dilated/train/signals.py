"""Stopping a training run cleanly on SIGINT/SIGTERM: the first signal asks for a stop after the current step (the
trainer checkpoints, then returns); a second one interrupts at once."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["StopRequest"]

logger = logging.getLogger(__name__)


class StopRequest:
    """Whether a stop was asked for; :meth:`on_signals` installs the handlers for the duration of a ``with`` block."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def on_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM set :attr:`requested`; a second signal raises ``KeyboardInterrupt``. Signal handlers can
        only be installed from the main thread: elsewhere this does nothing."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            if self.requested:
                signal.signal(signum, previous[signum])
                raise KeyboardInterrupt
            self.requested = True
            logger.warning("stopping after this step (signal %d); send it again to interrupt at once", signum)

        for s in previous:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
