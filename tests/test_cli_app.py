"""``trio-tcp serve APP``: loading ``module:attribute`` and serving it, in-process and as a command.

Loading is tested in-process (every way it can fail gives one line, status 2);
serving an instance, a class and a factory runs the real command on a port 0
listener. Every module written here has a name of its own, and the test
restores ``sys.path`` and ``sys.modules``, so tests cannot see each other's apps.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from _cli_process import APP_SOURCE, ask_pid, one_line, run_cli, serving, write_app

from trio_tcp import _cli
from trio_tcp._cli import _app
from trio_tcp._cli._options import CommandError, UsageError

_names = (f"cli_app_{n}" for n in itertools.count())


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Whatever a test imports or puts on sys.path is gone afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def _module(tmp_path: Path, source: str = APP_SOURCE) -> str:
    name = next(_names)
    write_app(tmp_path, name, source)
    return name


@pytest.mark.parametrize("attribute", ["service", "PidEcho", "make_service"])
def test_load_takes_an_instance_a_class_or_a_factory(
    tmp_path: Path, isolated: None, attribute: str
) -> None:
    name = _module(tmp_path)
    service = _app.load(f"{name}:{attribute}", str(tmp_path))
    assert type(service).__name__ == "PidEcho"
    assert sys.path[0] == str(tmp_path)


def test_load_follows_a_dotted_attribute(tmp_path: Path, isolated: None) -> None:
    name = _module(tmp_path, APP_SOURCE + "\nclass Holder:\n    inner = PidEcho()\n")
    assert type(_app.load(f"{name}:Holder.inner", str(tmp_path))).__name__ == "PidEcho"


@pytest.mark.parametrize(
    ("source", "attribute", "message"),
    [
        pytest.param(
            None, "service", "no module named '{module}' (looked in {dir}", id="no-module"
        ),
        pytest.param(APP_SOURCE, "nope", "module '{module}' has no attribute 'nope'", id="no-attr"),
        pytest.param("x = 42\n", "x", "{module}:x is a int, not a service", id="not-a-service"),
        pytest.param(
            "class Plain:\n    pass\n",
            "Plain",
            "{module}:Plain() returned a Plain, not a service (it has no on_connect method)",
            id="class-without-on_connect",
        ),
        pytest.param(
            "raise RuntimeError('no database\\nsecond line')\n",
            "service",
            "importing '{module}' raised RuntimeError: no database",
            id="import-raises",
        ),
        pytest.param(
            "import not_installed_anywhere\n",
            "service",
            "importing '{module}' raised ModuleNotFoundError: "
            "No module named 'not_installed_anywhere'",
            id="missing-dependency",
        ),
        pytest.param("def f(:\n", "f", "importing '{module}' raised SyntaxError", id="syntax"),
        pytest.param(
            "def make():\n    raise ValueError('bad config')\n",
            "make",
            "{module}:make() raised ValueError: bad config",
            id="factory-raises",
        ),
        pytest.param(
            "async def make():\n    pass\n",
            "make",
            "{module}:make is an async function",
            id="async-factory",
        ),
    ],
)
def test_load_failures_are_one_line_with_status_2(
    tmp_path: Path, isolated: None, source: str | None, attribute: str, message: str
) -> None:
    name = next(_names) if source is None else _module(tmp_path, source)
    with pytest.raises(CommandError) as error:
        _app.load(f"{name}:{attribute}", str(tmp_path))
    assert error.value.status == 2
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith("cannot load APP: " + message.format(module=name, dir=tmp_path))


@pytest.mark.parametrize("spec", ["app", "app:", ":service", "app:service:x", "my-app:x", "a:1b"])
def test_spec_syntax_is_checked_before_importing(spec: str) -> None:
    with pytest.raises(UsageError, match="APP must be MODULE:ATTRIBUTE"):
        _app.check_spec(spec)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["serve", "app"], "APP must be MODULE:ATTRIBUTE", id="syntax"),
        pytest.param(["serve", "app:x", "--mode", "chat"], "--mode and --framing", id="mode"),
        pytest.param(
            ["serve", "app:x", "--framing", "lines"], "--mode and --framing", id="framing"
        ),
    ],
)
def test_app_argument_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(argv)
    assert exit_info.value.code == 2
    assert message in one_line(capsys.readouterr().err.encode())


# -- as a command ----------------------------------------------------------------------------


@pytest.mark.parametrize("attribute", ["service", "PidEcho", "make_service"])
@pytest.mark.trio
async def test_serve_app_instance_class_or_factory(tmp_path: Path, attribute: str) -> None:
    write_app(tmp_path)
    with trio.fail_after(10):
        async with serving(f"pidecho:{attribute}", "--app-dir", str(tmp_path)) as server:
            assert await ask_pid(server.port) == server.process.pid
            assert await server.stop() == 0
    log = server.err.decode()
    assert f"pidecho:{attribute}, plain TCP; Ctrl-C to stop" in log
    assert "stopped: 1 connection(s), 3 B in, " in log


@pytest.mark.trio
async def test_serve_app_from_the_current_directory_by_default(tmp_path: Path) -> None:
    write_app(tmp_path)
    with trio.fail_after(10):
        async with serving("pidecho:service", cwd=tmp_path) as server:
            assert await ask_pid(server.port) == server.process.pid
            assert await server.stop() == 0


@pytest.mark.trio
async def test_serve_bad_app_exits_2_with_one_line(tmp_path: Path) -> None:
    write_app(tmp_path, "broken", "raise ImportError('cannot reach the database')\n")
    with trio.fail_after(10):
        result = await run_cli("serve", "broken:service", "--app-dir", str(tmp_path), "--port", "0")
    assert result.returncode == 2
    assert result.stdout == b""
    assert one_line(result.stderr) == (
        "trio-tcp: cannot load APP: importing 'broken' raised ImportError: "
        "cannot reach the database"
    )
