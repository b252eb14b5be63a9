import numpy as np
import pytest

import graphopt  # noqa: F401  (registers the ops)
from graphopt.ops import load_library

EXTREME_KEYS = np.array(
    [
        np.iinfo(np.int64).min,
        np.iinfo(np.int64).max,
        -1,
        -2,
        0,
        1,
        np.iinfo(np.int64).min + 1,
        np.iinfo(np.int64).max - 1,
        np.iinfo(np.int32).min,
        np.iinfo(np.int32).max,
    ],
    dtype=np.int64,
)


@pytest.fixture(scope="session")
def lib():
    """The loaded op-wrapper module (raw ops)."""
    return load_library()
