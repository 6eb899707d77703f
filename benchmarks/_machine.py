"""A description of the machine and software a run measured, stored with its results."""

from __future__ import annotations

import datetime
import os
import platform
import ssl
import sys
from pathlib import Path

import trio

import trio_tcp


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what the platform module knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def virtualised() -> bool:
    """Whether /proc/cpuinfo shows the ``hypervisor`` flag (a VM: expect more noise)."""
    try:
        return " hypervisor" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def memory_total() -> str:
    """Total RAM from /proc/meminfo, e.g. ``"7.8 GiB"``."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine skews results."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def describe(pinning: str, generator: str, notes: tuple[str, ...]) -> dict[str, object]:
    """Everything a reader needs to judge (and reproduce) the figures."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "virtual_machine": virtualised(),
        "memory": memory_total(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "trio": trio.__version__,
        "trio_tcp": trio_tcp.__version__,
        "openssl": ssl.OPENSSL_VERSION,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": load_average(),
        "pinning": pinning,
        "load_generator": generator,
        "load_generator_notes": list(notes),
    }


def one_line(machine: dict[str, object]) -> str:
    """A short caption: CPU, cores, Python, trio, date."""
    date = str(machine["date"])[:10]
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {machine['python']}, "
        f"trio {machine['trio']}, {machine['kernel']}, {date}"
    )
