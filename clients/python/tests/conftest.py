"""Fixtures of the client's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from live import LiveBridge, start_live_bridge


@pytest.fixture(scope="session")
def live_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveBridge]:
    """mock-gateway + serve subprocesses, shared by the session's tests."""
    yield from start_live_bridge(tmp_path_factory.mktemp("live-bridge"))
