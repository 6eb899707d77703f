"""Development sessions; ``nox`` runs the default ones, CONTRIBUTING.md describes each.

Run with ``python -m pip install nox && nox``; each session builds its own
virtualenv, so a fresh machine needs nothing else but the Python versions:
``tests`` runs on every supported one (``nox -s tests-3.12`` picks one).
Without ``CI`` set a missing interpreter is skipped with a warning; in CI it
is an error, so that a green run has really tested every version.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import nox
from packaging.requirements import Requirement

nox.options.sessions = ["tests", "lint", "typecheck", "docs", "examples", "lowest", "build"]
nox.options.error_on_missing_interpreters = os.environ.get("CI", "").lower() not in {
    "",
    "0",
    "false",
}
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# Sessions that need one interpreter run on this one.
MAIN = "3.11"
TYPED = ["trio_tcp", "tests", "examples", "benchmarks", "noxfile.py", ".ci/summarize.py"]
SOURCES = [*TYPED, "docs/conf.py"]
ROOT = Path(__file__).parent


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite (``nox -s tests -- -k name`` passes arguments to pytest)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=MAIN)
def lint(session: nox.Session) -> None:
    """Lint and check formatting with ruff (the ASYNC rules included)."""
    session.install("ruff")
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)


@nox.session(python=MAIN)
def typecheck(session: nox.Session) -> None:
    """Type-check with ``mypy --strict`` against trio's own inline types.

    trio-typing is left out on purpose: trio ships its own annotations now, and
    trio-typing's ``trio-stubs`` shadow them (mypy reports "Name
    trio.TaskStatus is not defined", and its plugin crashes mypy 2.x).
    """
    # exceptiongroup: mypy checks as Python 3.10, where trio_tcp imports it.
    # anyio: the benchmarks' reference servers.
    session.install("-e", ".[test]", "mypy", "nox", "exceptiongroup", "anyio")
    session.run("mypy", "--strict", *TYPED)


@nox.session(python=MAIN)
def docs(session: nox.Session) -> None:
    """Build the documentation site into docs/_build/html; any warning fails the build."""
    session.install("-e", ".[docs]")
    output = ROOT / "docs" / "_build" / "html"
    # -E: read every page each time, so a warning in an unchanged page still fails.
    session.run(
        "sphinx-build",
        "-E",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "docs",
        str(output),
        *session.posargs,
    )
    session.log(f"open {output / 'index.html'}")


@nox.session(python=MAIN)
def examples(session: nox.Session) -> None:
    """Run every example briefly against the others, and the README's main job."""
    session.install("-e", ".")
    session.run("python", "examples/run_all.py")
    session.run("trio-tcp", "demo")


def floors() -> list[str]:
    """Every declared dependency (runtime and ``test``) pinned to its lowest allowed version."""
    project = nox.project.load_toml(ROOT / "pyproject.toml")["project"]
    pins = []
    for line in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        requirement = Requirement(line)
        lowest = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if len(lowest) != 1:
            raise ValueError(f"{line!r}: declare the minimum as a single '>='")
        marker = f"; {requirement.marker}" if requirement.marker else ""
        pin = f"{requirement.name}=={lowest[0]}{marker}"
        if pin not in pins:
            pins.append(pin)
    return pins


@nox.session(python=PYTHONS[0])
def lowest(session: nox.Session) -> None:
    """Run the tests with every dependency at its declared minimum, on the oldest Python.

    Keeps the floors in pyproject.toml true: a feature or fix of a newer release
    that trio_tcp (or its tests) relies on fails here until the floor is raised.
    """
    constraints = Path(session.create_tmp()) / "lowest.txt"
    constraints.write_text("\n".join(floors()) + "\n")
    session.log("pinned: " + ", ".join(floors()))
    session.install("-c", str(constraints), "-e", ".[test]")
    session.run("python", "-m", "pip", "check")
    session.run("pytest", *session.posargs)


# What the sdist must carry besides the package, for its tests and its users.
SDIST_REQUIRES = [
    "LICENSE",
    "README.md",
    "CHANGELOG.md",
    "CONTRIBUTING.md",
    "noxfile.py",
    "pyproject.toml",
    "tests/conftest.py",
    "tests/_loopback.py",
    "docs/conf.py",
    "docs/index.md",
    "docs/performance.png",
    "examples/run_all.py",
    "benchmarks/run.py",
]


@nox.session(python=MAIN)
def build(session: nox.Session) -> None:
    """Build the sdist and the wheel, check them, and run the tests from the unpacked sdist.

    The wheel is built from the sdist (as ``python -m build`` does), installed
    with its ``test`` extra, and tested by the sdist's own tests: so the sdist
    is complete and the wheel works, as a downstream packager would find them.
    """
    session.install("build", "twine")
    dist = Path(session.create_tmp()) / "dist"
    for old in dist.glob("*"):
        old.unlink()
    session.run("python", "-m", "build", "--outdir", str(dist))
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    session.run("twine", "check", "--strict", str(sdist), str(wheel))

    unpacked = Path(session.create_tmp()) / "sdist"
    shutil.rmtree(unpacked, ignore_errors=True)
    with tarfile.open(sdist) as archive:
        archive.extractall(unpacked, filter="data")
    (source,) = unpacked.iterdir()
    missing = [path for path in SDIST_REQUIRES if not (source / path).is_file()]
    missing += [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "tests").glob("*.py"))
        if not (source / path.relative_to(ROOT)).is_file()
    ]
    if missing:
        session.error(f"missing from the sdist: {', '.join(missing)}")
    session.install(f"{wheel}[test]")
    # The tests exercise the installed wheel: the sources they could import instead go.
    shutil.rmtree(source / "trio_tcp")
    with session.chdir(str(source)):
        session.run("pytest", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=MAIN)
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
