"""One log for the whole command: the command's own lines and the library's, one stream, one format.

Every line looks the same, whoever wrote it::

    12:00:01 [4242] INFO connect 127.0.0.1:53122 (#3)
    12:00:02 [4242] INFO TLS handshake from 127.0.0.1:53124 failed; connection dropped: ...
    12:00:03 [4243] WARNING worker 4241 exited with status 1; restarting in 0.1 s

The process id tells the workers of ``serve --workers`` apart (they share the
stream: each line is one ``write``, so lines never interleave). The log goes
to stderr: stdout is data (``connect``, ``bench --json``) or the one line
``serve`` announces its address with, which scripts read.

The command's lines come from the ``trio_tcp.cli`` logger, always at INFO;
the library's (``trio_tcp``) from WARNING, INFO with ``-v``, and everything
with ``--debug``.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["FORMAT", "configure", "log"]

FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(message)s"
DATE_FORMAT = "%H:%M:%S"

#: The command's own log (connections served, workers started and stopped).
log = logging.getLogger("trio_tcp.cli")


def configure(*, verbose: bool = False, debug: bool = False) -> None:
    """Send every ``trio_tcp`` record to stderr in :data:`FORMAT`; set the levels."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    library = logging.getLogger("trio_tcp")
    for logger in (library, log):
        logger.handlers[:] = []
    library.addHandler(handler)
    # The root logger is left to an APP (its logging.basicConfig still works);
    # ours stop here, so nothing is printed twice if it adds a handler.
    library.propagate = False
    library.setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)
    log.setLevel(logging.DEBUG if debug else logging.INFO)
