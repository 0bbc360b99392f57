"""Fixtures for the fleet tests: one local Ray instance for the whole package (2 CPUs,
loopback only, no dashboard), started by the tests and shut down after them, and the
service tests' tiny meta-trained prior."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import pytest

from tests.service.conftest import tiny_prior  # noqa: F401  (the service tests' tiny prior)

ray = pytest.importorskip("ray", reason="the fleet extra (ray) is not installed")


@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[None]:
    """A local Ray instance with 2 CPUs on 127.0.0.1; shut down after the package."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from regulator.service.executor_ray import connect

    assert not ray.is_initialized()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ray's own start-up warnings are not ours
        connect(None, num_cpus=2)
    try:
        yield
    finally:
        ray.shutdown()
