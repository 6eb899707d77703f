"""Every Python snippet of the README and the guides runs, as a reader would copy it.

Each page runs top to bottom in one namespace, inside one ``trio.run``, in a
fresh temporary directory, with ``trio`` and ``trio_tcp`` already imported
(every page assumes them). A snippet with a top-level ``await`` runs in that
trio run; any other shown snippet runs in a worker thread, so that it may call
``trio.run`` itself, as a script does.

Two HTML comments, invisible on a rendered page, steer it:

``<!-- not run: REASON -->``, on the line just before a fence
    The snippet is only illustrative (it serves forever, or needs files or
    hosts a reader has and the test has not). The reason is required.

``<!-- doctest`` ... a fenced Python block ... ``-->``
    Hidden code run at that point: what the page takes for granted (a server
    to connect to, certificate files) and checks of what a snippet did. Hidden
    code may use ``background``, a nursery for the page's servers, cancelled
    once the page has run.

The example ports (3000, 7000, 9002) are integer literals in the snippets; each
page gets free ports in their place, so that a page never meets a real service
on those ports, or another page running at the same time.
"""

from __future__ import annotations

import ast
import inspect
import re
import socket
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_tcp

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE_PORTS = (3000, 7000, 9002)
# Generous: a page makes a few loopback round trips and a one-second timeout.
PAGE_TIMEOUT = 60

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
NOT_RUN = re.compile(r"^\s*<!-- not run: (?P<reason>\S.*?) -->\s*$")


@dataclass(frozen=True)
class Snippet:
    """One Python block of a page: shown (and run), hidden (and run), or not run."""

    line: int  # of the first line of code, 1-based
    code: str
    hidden: bool = False
    not_run: str | None = None


def read_fence(lines: list[str], start: int, where: str) -> tuple[str, str, int]:
    """Return the language, the code and the index after the fence opened at ``start``."""
    opening = FENCE.match(lines[start])
    assert opening is not None
    fence = opening["fence"]
    language = (opening["info"].split() or [""])[0]
    for end in range(start + 1, len(lines)):
        stripped = lines[end].strip()
        if stripped.startswith(fence) and set(stripped) == {fence[0]}:
            return language, textwrap.dedent("\n".join(lines[start + 1 : end])), end + 1
    raise ValueError(f"{where}:{start + 1}: code fence never closed")


def snippets(page: Path) -> list[Snippet]:
    """The Python blocks of ``page``, in order, with what the comments say about them."""
    return parse(page.read_text(encoding="utf-8"), str(page.relative_to(ROOT)))


def parse(text: str, where: str) -> list[Snippet]:
    """The Python blocks of Markdown ``text`` (``where`` names it in errors)."""
    lines = text.splitlines()
    found: list[Snippet] = []
    not_run: str | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.strip() == "<!-- doctest":
            end = next(i for i in range(index, len(lines)) if lines[i].strip() == "-->")
            inner = index + 1
            if not FENCE.match(lines[inner]):
                raise ValueError(f"{where}:{index + 1}: a doctest comment holds one fenced block")
            language, code, after = read_fence(lines, inner, where)
            if language != "python" or after != end:
                raise ValueError(f"{where}:{index + 1}: a doctest comment holds one python block")
            found.append(Snippet(inner + 2, code, hidden=True))
            index = end + 1
            continue
        if line.lstrip().startswith("<!-- not run"):
            match = NOT_RUN.match(line)
            if match is None:
                raise ValueError(f"{where}:{index + 1}: write '<!-- not run: REASON -->'")
            not_run = match["reason"]
            index += 1
            if not (index < len(lines) and FENCE.match(lines[index])):
                raise ValueError(f"{where}:{index}: 'not run' must come just before a fence")
            continue
        if FENCE.match(line):
            language, code, after = read_fence(lines, index, where)
            if language in ("python", "py"):
                found.append(Snippet(index + 2, code, not_run=not_run))
            elif not_run is not None:
                raise ValueError(f"{where}:{index + 1}: 'not run' before a {language} block")
            not_run = None
            index = after
            continue
        index += 1
    return found


def free_port() -> int:
    """A port free on 127.0.0.1 and, where there is IPv6, on ::1 (as ``Listener`` binds)."""
    while True:
        with socket.socket() as v4:
            v4.bind(("127.0.0.1", 0))
            port: int = v4.getsockname()[1]
            if not socket.has_ipv6:
                return port
            with socket.socket(socket.AF_INET6) as v6:
                try:
                    v6.bind(("::1", port))
                except OSError:
                    continue
                return port


class ExamplePorts(ast.NodeTransformer):
    """Replace the example ports' integer literals with this page's free ports."""

    def __init__(self, ports: dict[int, int]) -> None:
        self.ports = ports

    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        if type(node.value) is int and node.value in self.ports:
            return ast.copy_location(ast.Constant(self.ports[node.value]), node)
        return node


async def run_page(page: Path, blocks: list[Snippet]) -> None:
    ports = ExamplePorts({port: free_port() for port in EXAMPLE_PORTS})
    namespace: dict[str, Any] = {"__name__": "__main__", "trio": trio, "trio_tcp": trio_tcp}
    with trio.fail_after(PAGE_TIMEOUT):
        async with trio.open_nursery() as background:
            namespace["background"] = background
            for block in blocks:
                if block.not_run is not None:
                    continue
                tree = ast.parse(block.code, filename=str(page))
                ast.increment_lineno(tree, block.line - 1)
                # Tracebacks point at the page's own lines.
                code = compile(
                    ports.visit(tree), str(page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
                )
                if code.co_flags & inspect.CO_COROUTINE:
                    await eval(code, namespace)
                elif block.hidden:
                    exec(code, namespace)  # set-up code may start tasks in ``background``
                else:
                    await trio.to_thread.run_sync(exec, code, namespace, abandon_on_cancel=True)
            background.cancel_scope.cancel()


RUNNABLE = [page for page in PAGES if any(b.not_run is None for b in snippets(page))]


@pytest.mark.parametrize("page", RUNNABLE, ids=[str(p.relative_to(ROOT)) for p in RUNNABLE])
def test_page_snippets_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # snippets may write files, as users' scripts do
    trio.run(run_page, page, snippets(page))


def test_most_snippets_run() -> None:
    # Illustrations are the exception: a page of them teaches nothing that is checked.
    blocks = [block for page in PAGES for block in snippets(page) if not block.hidden]
    not_run = [block for block in blocks if block.not_run is not None]
    assert len(not_run) * 4 < len(blocks), [block.not_run for block in not_run]


def test_the_readme_has_no_relative_links() -> None:
    # The README is also the package index's description, where a relative link
    # points nowhere: files are named in code spans instead.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    inline = re.findall(r"\]\((?!https?://)([^)]*)\)", readme)
    reference = re.findall(r"^\s*\[[^\]]+\]:\s*(?!https?://)(\S+)", readme, flags=re.M)
    images = re.findall(r"<(?:a|img)\b[^>]*(?:href|src)=\"(?!https?://)([^\"]*)\"", readme)
    assert inline + reference + images == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<!-- not run -->\n```python\npass\n```\n", "REASON"),
        ("<!-- not run: why -->\n\n```python\npass\n```\n", "just before"),
        ("<!-- not run: why -->\n```console\n$ ls\n```\n", "console"),
        ("<!-- doctest\n```python\npass\n```\nmore\n-->\n", "one python block"),
        ("```python\npass\n", "never closed"),
    ],
    ids=["no-reason", "not-adjacent", "not-python", "extra-text", "unclosed"],
)
def test_malformed_markers_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse(text, "page.md")


def test_snippets_are_found_with_their_markers() -> None:
    blocks = snippets(ROOT / "docs" / "migration.md")
    assert [bool(b.not_run) for b in blocks if not b.hidden].count(True) == 1
    assert any(b.hidden for b in blocks)
    assert all(b.code.strip() for b in blocks)
