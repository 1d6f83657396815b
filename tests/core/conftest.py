"""Shared fixtures for the protocol-core tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .vectors import FIXTURES_DIR


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """tests/fixtures/interop (the CC0 interop vectors)."""
    return FIXTURES_DIR
