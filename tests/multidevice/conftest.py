"""Tests that need 8 devices. tests/test_sharding.py runs them in a process started with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (JAX reads it once, at import)."""

import os

import jax
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(config, items):
  skip = pytest.mark.skip(reason="needs 8 devices: run through tests/test_sharding.py")
  for item in items:
    if str(item.path).startswith(HERE):
      item.add_marker(pytest.mark.multidevice)
      if jax.device_count() < 8:
        item.add_marker(skip)
