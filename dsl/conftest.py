"""Doctest setup for the language reference: keep the engine's structlog output out of the examples."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog.testing


@pytest.fixture(autouse=True)
def _quiet_structlog() -> Iterator[None]:
    # structlog prints to stdout by default, which doctest would compare with the
    # expected output; the reference shows log events explicitly where it means to.
    with structlog.testing.capture_logs():
        yield
