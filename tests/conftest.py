"""Suite-wide fixtures and settings. Qt, when a test needs it, runs offscreen."""

import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture
def rng():
    return np.random.default_rng(20261121)
