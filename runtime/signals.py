"""The signals a serving loop answers, for ``runtime.daemon`` and ``runtime.multiserve``.

SIGTERM/SIGINT set ``_stop`` to the signal number (the loop finishes its batch, writes
the final checkpoint and exits 0), SIGHUP sets ``_reopen`` (the output file is reopened,
for logrotate), and SIGXFSZ is ignored (a file-size limit makes the write fail, which
is counted, instead of killing the daemon).
"""
from __future__ import annotations

import signal


class SignalledLoop:
    """Mixin: ``install_signals()``; the loop polls ``_stop`` and ``_reopen``."""

    _stop: int | None = None
    _reopen: bool = False

    def _on_stop(self, signum, frame) -> None:
        self._stop = signum

    def _on_hup(self, signum, frame) -> None:
        self._reopen = True

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
