"""Training data in the course's sample format: the CSV reader and the synthetic default."""

from graphopt.course.data.samples import (
    EMBEDDING_DIM,
    GENRE_FEATURES,
    GENRE_VOCAB,
    ID_FEATURES,
    LABEL,
    NUMERIC_FEATURES,
    TIMESTAMP,
    Samples,
    read_samples,
    samples_reader,
    time_split,
)
from graphopt.course.data.synthetic import generate_samples

__all__ = [
    "EMBEDDING_DIM",
    "GENRE_FEATURES",
    "GENRE_VOCAB",
    "ID_FEATURES",
    "LABEL",
    "NUMERIC_FEATURES",
    "TIMESTAMP",
    "Samples",
    "generate_samples",
    "read_samples",
    "samples_reader",
    "time_split",
]
