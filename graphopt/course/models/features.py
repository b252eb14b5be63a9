"""The Embedding+MLP's Feature layer, shared by every form: inputs, vocabularies, normalization."""

import dataclasses

import numpy as np

from graphopt.course.data import EMBEDDING_DIM, GENRE_FEATURES, GENRE_VOCAB, ID_FEATURES, NUMERIC_FEATURES

HIDDEN_UNITS = (128, 128)
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
# One row per genre plus row 0 for out-of-vocabulary and empty cells.
GENRE_ROWS = len(GENRE_VOCAB) + 1

INPUT_DTYPES = {
    **{name: "int64" for name in ID_FEATURES},
    **{name: "string" for name in GENRE_FEATURES},
    **{name: "float32" for name in NUMERIC_FEATURES},
}


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Per-feature mean and standard deviation of the numeric inputs, taken from the training split."""

    mean: tuple
    std: tuple

    @classmethod
    def fit(cls, samples):
        cols = np.stack([samples.columns[n].astype(np.float64) for n in NUMERIC_FEATURES], axis=1)
        std = cols.std(axis=0)
        std[std == 0] = 1.0
        return cls(tuple(float(x) for x in cols.mean(axis=0)), tuple(float(x) for x in std))

    def of(self, name):
        i = NUMERIC_FEATURES.index(name)
        return self.mean[i], self.std[i]


def feature_arrays(samples):
    """The model inputs as numpy arrays with the signature's dtypes (genres as bytes)."""
    out = {}
    for name, dtype in INPUT_DTYPES.items():
        col = samples.columns[name]
        out[name] = col.astype(object if dtype == "string" else dtype)
        if dtype == "string":
            out[name] = np.array([s.encode() for s in col], dtype=object)
    return out


def dataset(samples, shuffle=False, seed=0, batch_size=BATCH_SIZE):
    """A batched ``tf.data.Dataset`` of (features, label) for Keras ``fit``."""
    import tensorflow as tf

    features = {name: tf.constant(v) for name, v in feature_arrays(samples).items()}
    ds = tf.data.Dataset.from_tensor_slices((features, samples.labels.astype(np.float32)))
    if shuffle:
        ds = ds.shuffle(len(samples), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size)


__all__ = [
    "dataset",
    "EMBEDDING_DIM",
    "GENRE_ROWS",
    "HIDDEN_UNITS",
    "INPUT_DTYPES",
    "Normalization",
    "feature_arrays",
]
