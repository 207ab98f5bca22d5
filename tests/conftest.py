"""Shared fixtures: one metrics cache per test session and one real local Ray for the tests
that need it (request ``ray_local``)."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def _session_env(name: str, value: str) -> Iterator[str]:
    """Set an environment variable for the test session (before Ray starts, so workers and
    subprocess drivers inherit it), then put back what was there."""
    previous = os.environ.get(name)
    os.environ[name] = value
    yield value
    if previous is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = previous


@pytest.fixture(scope="session", autouse=True)
def mtgan_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh metrics-classifier cache for the session (set before Ray starts, so its workers
    inherit it): tests never read or write the user's ~/.cache/mtgan."""
    yield from _session_env("MTGAN_CACHE", str(tmp_path_factory.mktemp("mtgan-cache")))


@pytest.fixture(scope="session", autouse=True)
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A signing key for the session's sweeps (orchestrator.signing), so tests never create or
    read the user's ~/.config/mtgan-sweep/signing.key; subprocess drivers inherit it."""
    yield from _session_env("MTGAN_SIGNING_KEY_FILE", str(tmp_path_factory.mktemp("signing") / "signing.key"))


@pytest.fixture(scope="session")
def ray_local(mtgan_cache: str):
    """A real single-node Ray with 2 CPUs, started once per session (ray.init costs ~4 s)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
