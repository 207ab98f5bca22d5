"""Shared fixtures: one metrics cache per test session and one real local Ray for the tests
that need it (request ``ray_local``)."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def mtgan_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh metrics-classifier cache for the session (set before Ray starts, so its workers
    inherit it): tests never read or write the user's ~/.cache/mtgan."""
    path = str(tmp_path_factory.mktemp("mtgan-cache"))
    previous = os.environ.get("MTGAN_CACHE")
    os.environ["MTGAN_CACHE"] = path
    yield path
    if previous is None:
        os.environ.pop("MTGAN_CACHE", None)
    else:
        os.environ["MTGAN_CACHE"] = previous


@pytest.fixture(scope="session", autouse=True)
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A signing key for the session's sweeps (orchestrator.signing), so tests never create or
    read the user's ~/.config/mtgan-sweep/signing.key; subprocess drivers inherit it."""
    path = str(tmp_path_factory.mktemp("signing") / "signing.key")
    previous = os.environ.get("MTGAN_SIGNING_KEY_FILE")
    os.environ["MTGAN_SIGNING_KEY_FILE"] = path
    yield path
    if previous is None:
        os.environ.pop("MTGAN_SIGNING_KEY_FILE", None)
    else:
        os.environ["MTGAN_SIGNING_KEY_FILE"] = previous


@pytest.fixture(scope="session")
def ray_local(mtgan_cache: str):
    """A real single-node Ray with 2 CPUs, started once per session (ray.init costs ~4 s)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
