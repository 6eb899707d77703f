"""The ``trio-tcp`` command (also ``python -m trio_tcp``): parsing, dispatch, exit status.

Each sub-command lives in its own module (``_demo``, ``_serve``,
``_connect``, ``_bench``, ``_certs``) with the same four names: ``HELP`` and
``EPILOG`` (examples), ``add_arguments(parser)``, ``check(args)``
(cross-option rules, raising :class:`UsageError`), and ``async run(args) ->
int``. What they share lives beside them (``_options``).

The command is a thin layer over the public API: no module of this package
imports anything from ``trio_tcp._*`` but its siblings.

Exit status: 0 success, 1 runtime error (one line on stderr, no traceback
unless ``--debug``), 2 bad arguments (one line), 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from types import ModuleType
from typing import NoReturn, cast

import trio

import trio_tcp

from . import _bench, _certs, _connect, _demo, _log, _serve
from ._options import CommandError, UsageError, describe, exception_leaves

__all__ = ["build_parser", "main"]

PROG = "trio-tcp"

COMMANDS: dict[str, ModuleType] = {
    "demo": _demo,
    "serve": _serve,
    "connect": _connect,
    "bench": _bench,
    "certs": _certs,
}

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_EPILOG = """\
start here:
  trio-tcp demo                      # echo round trips, plain TCP and TLS, nothing to prepare

exit status:
  0    success (serve: also after Ctrl-C or SIGTERM, its normal way to stop)
  1    runtime error: cannot bind or connect, TLS failure, errors during bench
  2    bad arguments, or an APP that cannot be loaded (serve)
  130  interrupted by Ctrl-C (connect, bench, demo, certs)

Run 'trio-tcp COMMAND --help' for each command's options and examples.
"""


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (status 2) instead of the whole usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``trio-tcp`` argument parser, with one sub-parser per command."""
    parser = _Parser(
        prog=PROG,
        description="A TCP and TLS toolbox built on trio_tcp: demo, serve, connect, bench, certs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {trio_tcp.__version__}")
    common = _Parser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="log everything trio_tcp does; tracebacks on errors"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        doc = module.__doc__ or ""
        sub = commands.add_parser(
            name,
            help=module.HELP,
            description=doc.split("\n\n", 1)[0].replace("\n", " "),
            epilog=module.EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
            allow_abbrev=False,
        )
        module.add_arguments(sub)
        sub.set_defaults(parser=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``trio-tcp`` with ``argv`` (default: the process's arguments); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # serve --workers starts its workers with the same arguments
    module = COMMANDS[args.command]
    try:
        module.check(args)
    except UsageError as exc:
        args.parser.error(str(exc))
    _log.configure(verbose=getattr(args, "verbose", False), debug=args.debug)
    run = cast("Callable[[argparse.Namespace], Awaitable[int]]", module.run)
    try:
        return trio.run(run, args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BaseException as exc:
        return _failure(exc, debug=args.debug)


def _failure(exc: BaseException, *, debug: bool) -> int:
    """Report a runtime error in one line per distinct message; re-raise a bug."""
    leaves = list(exception_leaves(exc))
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        return EXIT_INTERRUPTED
    if not all(isinstance(leaf, (trio_tcp.Error, OSError, CommandError)) for leaf in leaves):
        raise exc  # a bug, not a network condition: the traceback is the report
    if debug:
        traceback.print_exception(exc)
    for message in dict.fromkeys(describe(leaf) for leaf in leaves):
        print(f"{PROG}: {message}", file=sys.stderr)
    return max(leaf.status if isinstance(leaf, CommandError) else EXIT_ERROR for leaf in leaves)
