"""Loading ``APP`` (``module:attribute``) for ``trio-tcp serve``, as uvicorn and hypercorn do.

The attribute names a :class:`trio_tcp.Service` instance, a ``Service``
class (instantiated with no arguments), or a zero-argument callable that
returns one. ``--app-dir`` (default: the current directory) goes first on
``sys.path``. Whatever goes wrong -- no such module, no such attribute, not a
service, an exception while importing -- becomes one :class:`CommandError`
line with exit status 2 (``--debug`` adds the traceback).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys

import trio_tcp

from ._options import CommandError, UsageError

__all__ = ["check_spec", "load"]

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_SPEC = re.compile(rf"({_DOTTED}):({_DOTTED})")
#: The exit status of an APP that cannot be loaded: a bad argument, as for argparse.
EXIT_BAD_APP = 2


def check_spec(spec: str) -> None:
    """Reject an ``APP`` that is not ``module:attribute`` (before anything is imported).

    Raises:
        UsageError: the syntax is wrong.
    """
    if _SPEC.fullmatch(spec) is None:
        raise UsageError(f"APP must be MODULE:ATTRIBUTE, like myapp:service, not {spec!r}")


def load(spec: str, app_dir: str) -> trio_tcp.Service:
    """Import ``spec``'s module from ``app_dir`` (or ``sys.path``) and return its service.

    Raises:
        CommandError: (status 2) the module or attribute does not exist, the
            import or the factory raised, or the result is not a service.
    """
    match = _SPEC.fullmatch(spec)
    if match is None:
        raise CommandError(f"APP must be MODULE:ATTRIBUTE, not {spec!r}", status=EXIT_BAD_APP)
    module_name, attribute = match.groups()
    directory = os.path.abspath(app_dir)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    module = _import(module_name, directory)
    target: object = module
    try:
        for part in attribute.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise _bad(f"module {module_name!r} has no attribute {attribute!r}") from None
    return _service(spec, target)


def _import(name: str, directory: str) -> object:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}.")):
            raise _bad(f"no module named {name!r} (looked in {directory} and sys.path)") from exc
        raise _bad(f"importing {name!r} raised {_describe(exc)}") from exc
    except (Exception, SystemExit) as exc:
        raise _bad(f"importing {name!r} raised {_describe(exc)}") from exc


def _service(spec: str, target: object) -> trio_tcp.Service:
    if not isinstance(target, type) and _is_service(target):
        return target  # type: ignore[return-value]  # duck-typed: it has on_connect
    if not callable(target):
        raise _bad(
            f"{spec} is {_a(target)}, not a service "
            "(an object with on_connect, a Service class, or a function returning one)"
        )
    try:
        made = target()
    except Exception as exc:
        raise _bad(f"{spec}() raised {_describe(exc)}") from exc
    if inspect.iscoroutine(made):
        made.close()
        raise _bad(f"{spec} is an async function; it must return a service, not a coroutine")
    if not _is_service(made):
        raise _bad(f"{spec}() returned {_a(made)}, not a service (it has no on_connect method)")
    return made  # type: ignore[no-any-return]  # duck-typed: it has on_connect


def _is_service(value: object) -> bool:
    return callable(getattr(value, "on_connect", None))


def _a(value: object) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()  # one line on stderr, whatever the exception says
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _bad(message: str) -> CommandError:
    return CommandError(f"cannot load APP: {message}", status=EXIT_BAD_APP)
