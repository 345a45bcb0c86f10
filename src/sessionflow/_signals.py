"""Treat a request to terminate as Ctrl-C, so local servers are stopped by their PIDs.

Python dies at once on SIGTERM and SIGHUP: no ``finally``, no ``__exit__``. A demo or a
drill stopped by ``timeout``, ``docker stop``, systemd or a closed terminal would leave its
Redis and DynamoDB Local running. Raising `SystemExit` from the handler is not enough
either: inside ``asyncio.run`` it stops the event loop where it lands, and the tasks then
cancelled all at once may wait on one another. So the handler raises SIGINT instead and the
program stops the way Ctrl-C stops it: ``asyncio.run`` cancels its main task and every
``finally`` runs in order with the loop still going; synchronous code gets
`KeyboardInterrupt`. The exit status is then the shell's usual 128 + the signal's number.

A background job of a non-interactive shell (``drill &`` in a script, a CI step) starts
with SIGINT ignored, and the SIGINT raised here would vanish: the program would run to its
end before honouring the SIGTERM. So SIGINT gets Python's own handler back for the body,
the one ``asyncio.run`` looks for before it will cancel its main task on SIGINT.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class _Received:
    """The first terminating signal received, if any."""

    signum: int | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.signum is None:  # later ones: the clean-up already asked for is under way
            self.signum = signum
            signal.raise_signal(signal.SIGINT)


@contextlib.contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """Run the body with SIGTERM and SIGHUP turned into SIGINT; exit 128 + signum after one.

    Only from the main thread (Python runs signal handlers there), and only for signals
    without a handler of their own (``nohup`` leaves SIGHUP ignored, and so do we).
    """
    received = _Received()
    previous: dict[int, signal._HANDLER] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in TERMINATING_SIGNALS:
            if signal.getsignal(signum) is signal.SIG_DFL:
                previous[signum] = signal.signal(signum, received.handle)
        if previous and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    except BaseException:
        if received.signum is not None:
            raise SystemExit(128 + received.signum) from None
        raise
    finally:
        for restored, handler in previous.items():
            signal.signal(restored, handler)
    if received.signum is not None:
        raise SystemExit(128 + received.signum)
