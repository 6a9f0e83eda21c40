"""Fixtures of the web tests (issue 13): ``fleet``, real ``orch worker`` and ``orch serve`` processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web.processes import Fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Worker and server processes, stopped when the test ends."""
    made = Fleet(tmp_path)
    try:
        yield made
    finally:
        made.stop_all()
