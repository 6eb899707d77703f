"""``python -m trio_tcp``: the same as the ``trio-tcp`` command."""

from __future__ import annotations

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
