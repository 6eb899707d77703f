"""Shared test configuration.

Every async test is marked ``@pytest.mark.trio`` and bounds itself with
``trio.fail_after``, so a hang is a failure and never a stuck CI run.
"""

from __future__ import annotations

import os
import signal

import pytest
import trustme
from hypothesis import HealthCheck, settings

# A shell starts background jobs with SIGINT ignored, and processes inherit that:
# the tests that press Ctrl-C on the trio-tcp command need it delivered.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Real sockets make example timing noisy; correctness, not speed, is under test.
settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("ci", parent=settings.get_profile("default"), max_examples=50)
settings.load_profile("ci" if os.environ.get("CI") else "default")


# -- TLS: one throwaway CA and server certificate for the whole run ------------------


@pytest.fixture(scope="session")
def trustme_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def trustme_cert(trustme_ca: trustme.CA) -> trustme.LeafCert:
    return trustme_ca.issue_cert("127.0.0.1", "::1", "localhost")
