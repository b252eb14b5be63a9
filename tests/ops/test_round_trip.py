"""Export -> import of a large table is exact, extreme keys included."""

import numpy as np

from graphopt import EmbeddingVariable
from tests.ops.conftest import EXTREME_KEYS

N = 1_000_000
DIM = 4


def test_export_import_round_trip_of_a_million_random_keys():
    rng = np.random.default_rng(2026)
    keys = np.unique(
        np.concatenate(
            [
                rng.integers(
                    np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=N, dtype=np.int64, endpoint=True
                ),
                EXTREME_KEYS,
            ]
        )
    )
    values = rng.standard_normal((len(keys), DIM)).astype(np.float32)
    freqs = rng.integers(0, 1 << 32, size=len(keys), dtype=np.int64)
    versions = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=len(keys), dtype=np.int64)
    source = EmbeddingVariable(DIM)
    source.import_(keys, values, freqs, versions)
    assert int(source.size()) == len(keys)

    exported = [t.numpy() for t in source.export()]
    target = EmbeddingVariable(DIM)
    target.insert([1, 2, 3], np.ones((3, DIM), np.float32))  # replaced, not merged
    target.import_(*exported)
    got_keys, got_values, got_freqs, got_versions = (t.numpy() for t in target.export())

    order = np.argsort(got_keys)
    np.testing.assert_array_equal(got_keys[order], keys)
    np.testing.assert_array_equal(got_values[order], values)
    np.testing.assert_array_equal(got_freqs[order], freqs)
    np.testing.assert_array_equal(got_versions[order], versions)
    # and every key is found at its row
    np.testing.assert_array_equal(target.lookup(keys[::97]).numpy(), values[::97])
    np.testing.assert_array_equal(
        target.lookup(EXTREME_KEYS).numpy(), values[np.searchsorted(keys, EXTREME_KEYS)]
    )
