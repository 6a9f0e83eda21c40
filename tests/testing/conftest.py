"""
Fixtures of the testing-toolkit tests (issue 4).

``pytester`` runs pytest inside pytest, to test the plugin and its
``--orch-coverage`` report.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog.testing

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _quiet_structlog() -> Iterator[None]:
    # The engine logs every failed instance; keep them out of the captured output.
    with structlog.testing.capture_logs():
        yield
