import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this directory runs torch on one thread (tests/conftest.py)."""
