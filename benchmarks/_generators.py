"""The load generators: the project's C ``loadgen``, built at run time, or ``pyload``.

``benchmarks/loadgen/*.c`` is compiled into a cache folder outside the
repository (``$XDG_CACHE_HOME/trio-tcp-bench``, else ``~/.cache/trio-tcp-bench``),
once per version of its sources. The build links OpenSSL for the TLS
scenarios; without OpenSSL's headers (Debian: ``libssl-dev``) it is built
without TLS and ``pyload`` drives the TLS scenarios. Without a C compiler
``pyload`` drives everything it can (every mode but ``fanout``).
``redis-benchmark`` is used, when it is on the PATH, for the Redis scenarios,
and ``valgrind`` (with ``callgrind_control``) for the instruction counts.
Every result says which generator produced it.
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
LOADGEN_DIR = BENCH_DIR / "loadgen"
BUILD_TIMEOUT = 120.0
FLAGS = ("-O2", "-Wall", "-Wextra")
TLS_FLAGS = ("-DLOADGEN_TLS",)
TLS_LIBS = ("-lssl", "-lcrypto")


@dataclasses.dataclass(frozen=True)
class Generator:
    """A load generator command: ``argv`` + mode + options, and the modes it has."""

    name: str
    argv: tuple[str, ...]
    modes: frozenset[str]


PYLOAD = Generator(
    "pyload",
    (sys.executable, str(BENCH_DIR / "pyload.py")),
    frozenset({"pingpong", "stream", "connect", "hold", "pipeline"}),
)
LOADGEN_MODES = frozenset({"pingpong", "stream", "connect", "hold", "pipeline", "fanout"})


@dataclasses.dataclass(frozen=True)
class Generators:
    """The generator for plain scenarios, the one for TLS scenarios, and redis-benchmark."""

    plain: Generator
    tls: Generator
    redis_benchmark: str | None
    callgrind: tuple[str, str] | None  # valgrind and callgrind_control
    notes: tuple[str, ...]

    @property
    def summary(self) -> str:
        """Which generator drove which scenarios, in a few words."""
        if self.plain == self.tls:
            return self.plain.name
        return f"{self.plain.name} (plain), {self.tls.name} (TLS)"


def cache_dir() -> Path:
    """Where built binaries live (never the repository)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trio-tcp-bench"


def sources() -> list[Path]:
    """The load generator's source files."""
    return sorted(LOADGEN_DIR.glob("*.[ch]"))


def build(*, tls: bool) -> tuple[Path | None, str]:
    """Compile the load generator (cached by content); return (binary or None, note)."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler (cc/gcc) found"
    files = sources()
    if not files:
        return None, f"no sources in {LOADGEN_DIR}"
    flags = FLAGS + (TLS_FLAGS if tls else ())
    digest = hashlib.sha256(" ".join(flags).encode())
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    binary = cache_dir() / f"loadgen{'-tls' if tls else ''}-{digest.hexdigest()[:12]}"
    if binary.is_file():
        return binary, f"cached build {binary}"
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
    c_files = [str(p) for p in files if p.suffix == ".c"]
    command = [compiler, *flags, "-o", str(partial), *c_files, *(TLS_LIBS if tls else ()), "-lm"]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return None, f"build timed out after {BUILD_TIMEOUT:.0f}s"
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        errors = [line for line in done.stderr.splitlines() if "error" in line]
        hint = " (OpenSSL headers missing? Debian: apt install libssl-dev)" if tls else ""
        return None, f"build failed: {(errors or ['?'])[0].strip()}{hint}"
    partial.replace(binary)
    return binary, f"built {binary}"


def choose(*, use_loadgen: bool) -> Generators:
    """Pick the generators for this run, building the C load generator where possible."""
    redis_benchmark = shutil.which("redis-benchmark")
    valgrind, control = shutil.which("valgrind"), shutil.which("callgrind_control")
    callgrind = (valgrind, control) if valgrind and control else None
    external = (
        f"Redis scenarios: {redis_benchmark}"
        if redis_benchmark
        else "Redis scenarios: skipped (redis-benchmark not on PATH; Debian: redis-tools)",
        f"instruction counts: {valgrind} --tool=callgrind"
        if callgrind
        else "instruction counts: skipped (valgrind and callgrind_control not on PATH)",
    )
    if not use_loadgen:
        notes: tuple[str, ...] = ("--no-loadgen: pyload", *external)
        return Generators(PYLOAD, PYLOAD, redis_benchmark, callgrind, notes)
    tls_bin, tls_note = build(tls=True)
    if tls_bin is not None:
        loadgen = Generator("loadgen", (str(tls_bin),), LOADGEN_MODES)
        notes = (f"loadgen with TLS ({tls_note})", *external)
        return Generators(loadgen, loadgen, redis_benchmark, callgrind, notes)
    plain_bin, plain_note = build(tls=False)
    plain = Generator("loadgen", (str(plain_bin),), LOADGEN_MODES) if plain_bin else PYLOAD
    notes = (
        f"plain scenarios: {plain.name} ({plain_note})",
        f"TLS scenarios: pyload (loadgen with TLS: {tls_note})",
        *external,
    )
    return Generators(plain, PYLOAD, redis_benchmark, callgrind, notes)
