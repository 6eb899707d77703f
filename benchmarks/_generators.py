"""Which load generator drives the servers: the C loadgen, built at run time, or pyload.

The C loadgen (``../shared/tools/loadgen/loadgen.c`` next to the repository, or
the file named by ``--loadgen-source`` or ``$TRIO_TCP_LOADGEN_SOURCE``) is
compiled into a cache folder outside the repository, once per version of its
source. Its TLS build needs OpenSSL's headers (Debian: ``libssl-dev``). When a
build is impossible, the Python fallback ``benchmarks/pyload.py`` takes its
place, and every result says which generator produced it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "tools" / "loadgen" / "loadgen.c"
SOURCE_ENV = "TRIO_TCP_LOADGEN_SOURCE"
OPENSSL_HEADER = Path("/usr/include/openssl/ssl.h")
BUILD_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class Generator:
    """A load generator command: ``argv`` + mode + loadgen-style options."""

    name: str
    argv: tuple[str, ...]


PYLOAD = Generator("pyload", (sys.executable, str(BENCH_DIR / "pyload.py")))


@dataclasses.dataclass(frozen=True)
class Generators:
    """The generator for plain scenarios, the one for TLS scenarios, and why."""

    plain: Generator
    tls: Generator
    notes: tuple[str, ...]

    @property
    def summary(self) -> str:
        """Which generator drove which scenarios, in a few words."""
        if self.plain == self.tls:
            return self.plain.name
        return f"{self.plain.name} (plain), {self.tls.name} (TLS)"


def cache_dir() -> Path:
    """Where built binaries live: ``$XDG_CACHE_HOME/trio-tcp-bench`` (never the repository)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trio-tcp-bench"


def find_source(explicit: str | None) -> Path | None:
    """The loadgen source: the option, else the environment, else the shared tools folder."""
    for candidate in (explicit, os.environ.get(SOURCE_ENV)):
        if candidate:
            return Path(candidate).expanduser().resolve()
    return DEFAULT_SOURCE if DEFAULT_SOURCE.is_file() else None


def build(source: Path, *, tls: bool) -> tuple[Path | None, str]:
    """Compile ``source`` (cached by content hash); return (binary or None, note)."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler (cc/gcc) found"
    if tls and not OPENSSL_HEADER.is_file():
        return None, f"OpenSSL headers missing ({OPENSSL_HEADER}; Debian: apt install libssl-dev)"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    binary = cache_dir() / f"loadgen{'-tls' if tls else ''}-{digest}"
    if binary.is_file():
        return binary, f"cached build {binary}"
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
    command = [compiler, "-O2", "-o", str(partial), str(source)]
    if tls:
        command[2:2] = ["-DLOADGEN_TLS"]
        command += ["-lssl", "-lcrypto"]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return None, f"build timed out after {BUILD_TIMEOUT:.0f}s"
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"build failed: {last}"
    partial.replace(binary)
    return binary, f"built {binary}"


def choose(*, use_loadgen: bool, explicit_source: str | None) -> Generators:
    """Pick the generators for this run, building the C loadgen where possible."""
    if not use_loadgen:
        return Generators(PYLOAD, PYLOAD, ("--no-loadgen: using pyload",))
    source = find_source(explicit_source)
    if source is None or not source.is_file():
        where = source or f"{DEFAULT_SOURCE}, ${SOURCE_ENV} or --loadgen-source"
        note = f"C loadgen source not found ({where}): using pyload"
        return Generators(PYLOAD, PYLOAD, (note,))
    plain_bin, plain_note = build(source, tls=False)
    tls_bin, tls_note = build(source, tls=True)
    plain = Generator("loadgen", (str(plain_bin),)) if plain_bin else PYLOAD
    tls = Generator("loadgen-tls", (str(tls_bin),)) if tls_bin else PYLOAD
    notes = (
        f"plain scenarios: {plain.name} ({plain_note})",
        f"TLS scenarios: {tls.name} ({tls_note})",
    )
    return Generators(plain, tls, notes)
