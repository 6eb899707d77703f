"""Development sessions: ``nox`` runs tests, lint and typecheck; ``nox -s examples`` the examples.

Run with ``python -m pip install nox && nox``; each session builds its own
virtualenv, so a fresh machine needs nothing else.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "examples"]
nox.options.error_on_missing_interpreters = False
nox.options.reuse_existing_virtualenvs = True

PYTHON = ["3.11"]
SOURCES = ["trio_tcp", "tests", "examples", "benchmarks", "noxfile.py"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (``nox -s tests -- -k name`` passes arguments to pytest)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Lint and check formatting with ruff (the ASYNC rules included)."""
    session.install("ruff")
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Type-check with ``mypy --strict`` against trio's own inline types.

    trio-typing is left out on purpose: trio ships its own annotations now, and
    trio-typing's ``trio-stubs`` shadow them (mypy reports "Name
    trio.TaskStatus is not defined", and its plugin crashes mypy 2.x).
    """
    # exceptiongroup: mypy checks as Python 3.10, where trio_tcp imports it.
    session.install("-e", ".[test]", "mypy", "nox", "exceptiongroup")
    session.run("mypy", "--strict", *SOURCES)


@nox.session(python=PYTHON)
def examples(session: nox.Session) -> None:
    """Run every example briefly against the others, and the README's main job."""
    session.install("-e", ".")
    session.run("python", "examples/run_all.py")
    session.run("trio-tcp", "demo")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run the benchmark suite (not a default session; see docs/performance.md).

    Without arguments it measures everything and refreshes docs/performance.json
    and docs/performance.png; ``nox -s bench -- --quick`` (a smoke run) passes
    the arguments to benchmarks/run.py instead. See benchmarks/README.md.
    """
    session.install("-e", ".[bench]")
    args = session.posargs or [
        "--json",
        "docs/performance.json",
        "--chart",
        "docs/performance.png",
    ]
    session.run("python", "benchmarks/run.py", *args)
