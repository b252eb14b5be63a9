"""The course's sample format (SparrowRecSys ``testSamples.csv``) and its reader.

One row is one (user, movie) rating event with the movie's and the user's profile features,
a binary ``label`` (rating >= 3.5) and a ``timestamp`` used for the time-ordered split.
"""

import csv
import dataclasses
import os

import numpy as np

from graphopt.errors import DataError
from graphopt.tabular import read_csv_cells

# The course's genre vocabulary (SparrowRecSys EmbeddingMLP.py), in the course's order.
GENRE_VOCAB = (
    "Film-Noir",
    "Action",
    "Adventure",
    "Horror",
    "Romance",
    "War",
    "Comedy",
    "Western",
    "Documentary",
    "Sci-Fi",
    "Drama",
    "Thriller",
    "Crime",
    "Fantasy",
    "Animation",
    "IMAX",
    "Mystery",
    "Children",
    "Musical",
)

# Identity-bucketed id features: name -> number of buckets (valid ids are 0 .. buckets-1).
ID_FEATURES = {"movieId": 1001, "userId": 30001}
GENRE_FEATURES = (
    "userGenre1",
    "userGenre2",
    "userGenre3",
    "userGenre4",
    "userGenre5",
    "movieGenre1",
    "movieGenre2",
    "movieGenre3",
)
NUMERIC_FEATURES = (
    "releaseYear",
    "movieRatingCount",
    "movieAvgRating",
    "movieRatingStddev",
    "userRatingCount",
    "userAvgRating",
    "userRatingStddev",
)
LABEL = "label"
TIMESTAMP = "timestamp"
EMBEDDING_DIM = 10

# Every column the Embedding+MLP needs; other columns of the course's file are read and ignored.
REQUIRED_COLUMNS = (*ID_FEATURES, LABEL, TIMESTAMP, *GENRE_FEATURES, *NUMERIC_FEATURES)
_INT_COLUMNS = (*ID_FEATURES, LABEL, TIMESTAMP)


@dataclasses.dataclass
class Samples:
    """Columns of equal length: ids and label/timestamp int64, genres str, numerics float32."""

    columns: dict
    source: str = "synthetic"

    def __len__(self):
        return len(self.columns[LABEL])

    def take(self, indices):
        """The rows at ``indices``, as new Samples."""
        return Samples({k: v[indices] for k, v in self.columns.items()}, self.source)

    def features(self):
        """The model's inputs by name (the label and timestamp left out)."""
        return {k: v for k, v in self.columns.items() if k not in (LABEL, TIMESTAMP)}

    @property
    def labels(self):
        return self.columns[LABEL]


def time_split(samples, test_fraction=0.2):
    """Time-ordered split: the oldest rows train, the newest ``test_fraction`` test."""
    if len(samples) < 10:
        raise DataError(f"{samples.source}: {len(samples)} rows is too few to split; give at least 10")
    order = np.argsort(samples.columns[TIMESTAMP], kind="stable")
    n_train = int(round(len(order) * (1.0 - test_fraction)))
    return samples.take(order[:n_train]), samples.take(order[n_train:])


def read_samples(path):
    """Read a CSV in the course's sample format, validating every cell the model uses."""
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file; give a CSV in the course's sample format (--data)")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory; give a CSV file")

    def required(header):
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise DataError(
                f"{path}, line 1: missing column(s) {', '.join(missing)}; "
                "the header must name every feature of the course's sample format"
            )
        return REQUIRED_COLUMNS

    raw = read_csv_cells(path, required)
    if not raw[LABEL]:
        raise DataError(f"{path}: the header has no rows under it; the file holds no samples")
    columns = {}
    for c in _INT_COLUMNS:
        columns[c] = _parse(path, c, raw[c], np.int64)
    for c in NUMERIC_FEATURES:
        columns[c] = _parse(path, c, raw[c], np.float32)
    for c in GENRE_FEATURES:
        columns[c] = np.array([v.strip() for _, v in raw[c]], dtype=object)
    _check_ranges(path, columns, raw)
    return Samples(columns, source=path)


def _parse(path, column, cells, dtype):
    out = np.empty(len(cells), dtype=dtype)
    for i, (line_no, text) in enumerate(cells):
        try:
            value = float(text)
            if dtype is np.int64:
                if value != int(value):
                    raise ValueError
                value = int(value)
        except ValueError:
            kind = "an integer" if dtype is np.int64 else "a number"
            raise DataError(
                f"{path}, line {line_no}, column {column}: {text!r} is not {kind}; fix the cell"
            ) from None
        out[i] = value
    return out


def _check_ranges(path, columns, raw):
    for name, buckets in ID_FEATURES.items():
        bad = np.flatnonzero((columns[name] < 0) | (columns[name] >= buckets))
        if bad.size:
            line_no = raw[name][bad[0]][0]
            raise DataError(
                f"{path}, line {line_no}, column {name}: id {columns[name][bad[0]]} is outside "
                f"0..{buckets - 1}, the model's {buckets} identity buckets"
            )
    bad = np.flatnonzero((columns[LABEL] != 0) & (columns[LABEL] != 1))
    if bad.size:
        raise DataError(f"{path}, line {raw[LABEL][bad[0]][0]}, column {LABEL}: labels must be 0 or 1")


def samples_reader(path):
    """validate's data reader for the course's sample format (``validate_models(data_readers=)``):
    {column: values} of a CSV with the course's columns, each cell checked; None for any other file."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = {h.strip() for h in next(csv.reader(f), [])}
    except (UnicodeDecodeError, csv.Error):
        return None  # the generic CSV reader says what is wrong with it
    if not set(REQUIRED_COLUMNS) <= header:
        return None
    return read_samples(path).features()
