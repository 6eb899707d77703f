"""Sphinx configuration: the guides (Markdown, through MyST) and the API reference.

Build with ``nox -s docs`` (warnings are errors), or by hand::

    pip install -e '.[docs]'
    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from sphinx.util import logging

import trio_tcp

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent

project = "trio_tcp"
author = "trio_tcp developers"
copyright = "trio_tcp developers"
release = trio_tcp.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinxcontrib_trio",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_inventories"]

# Every cross-reference must resolve: a broken one is a warning, and warnings fail the build.
nitpicky = True
nitpick_ignore = [
    # Type aliases of the private modules, shown by name in signatures.
    ("py:class", "ClientAuth"),
    ("py:class", "MaybeAwaitable"),
    ("py:class", "StrPath"),
    ("py:class", "TrustedSource"),
    ("py:class", "UntrustedPolicy"),
    ("py:class", "OutboxPolicy"),
]

# -- Markdown ----------------------------------------------------------------
# GitHub-style anchors, so that the guides' "page.md#heading" links work on the
# site as they do on GitHub.
myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]

# -- API reference -----------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"members": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = ["Resource handling", "Error handling"]

# -- Links to Python and Trio ------------------------------------------------
# Each inventory is fetched from its site; without a network (CI), the copy in
# _inventories/ is used instead, so the build and its checks never depend on
# one. Refresh the copies from <URL>objects.inv when a link goes stale.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", (None, str(HERE / "_inventories" / "python.inv"))),
    "trio": (
        "https://trio.readthedocs.io/en/stable/",
        (None, str(HERE / "_inventories" / "trio.inv")),
    ),
}
intersphinx_timeout = 10

# -- HTML --------------------------------------------------------------------
html_theme = "furo"
html_title = f"trio_tcp {release}"
html_static_path: list[str] = []


def check_reference_is_complete(app: Any, env: Any) -> None:
    """Warn about every public name that the API reference leaves out."""
    import trio_tcp.framing

    modules: list[Any] = [trio_tcp, trio_tcp.framing, importlib.import_module("trio_tcp.testing")]
    python = env.get_domain("py")
    documented = set(python.objects) | set(python.modules)
    for module in modules:
        for name in module.__all__:
            if f"{module.__name__}.{name}" not in documented:
                logger.warning(
                    "%s.%s is public but not in the API reference", module.__name__, name
                )


def setup(app: Any) -> None:
    app.connect("env-check-consistency", check_reference_is_complete)
