import numpy as np
import pytest

from graphopt.course.data import (
    GENRE_FEATURES,
    GENRE_VOCAB,
    ID_FEATURES,
    NUMERIC_FEATURES,
    generate_samples,
    read_samples,
    time_split,
)
from graphopt.errors import DataError

HEADER = (
    "movieId,userId,rating,timestamp,label,releaseYear,movieGenre1,movieGenre2,movieGenre3,"
    "movieRatingCount,movieAvgRating,movieRatingStddev,userRatedMovie1,userRatedMovie2,userRatedMovie3,"
    "userRatedMovie4,userRatedMovie5,userRatingCount,userAvgReleaseYear,userReleaseYearStddev,"
    "userAvgRating,userRatingStddev,userGenre1,userGenre2,userGenre3,userGenre4,userGenre5"
)
ROW = (
    '1,14887,3.0,830155608,0,1995,Adventure,Animation,Children,10759,3.91,0.89,349,590,150,592,"",6,'
    "1992,2.64,3.67,0.52,Drama,Action,Thriller,Adventure,Crime"
)
ROW_EMPTY_GENRES = (
    '135,27108,5.0,865275107,1,1996,Comedy,"","",1390,3.00,1.06,802,104,653,494,260,25,1994,'
    "3.76,3.52,1.33,,,,,"
)


def write(tmp_path, text):
    path = tmp_path / "samples.csv"
    path.write_text(text)
    return str(path)


def test_reads_real_file(real_samples_path):
    samples = read_samples(real_samples_path)
    assert len(samples) == 22440
    assert samples.columns["movieId"].dtype == np.int64 and samples.columns["movieId"].max() < 1001
    assert samples.columns["userId"].max() < 30001
    assert samples.columns["movieAvgRating"].dtype == np.float32
    assert 0.5 < samples.labels.mean() < 0.6
    # Empty genre cells are valid and read as empty strings.
    assert (samples.columns["movieGenre3"] == "").any()


def test_reads_empty_genre_cells(tmp_path):
    samples = read_samples(write(tmp_path, "\n".join([HEADER, ROW, ROW_EMPTY_GENRES]) + "\n"))
    assert len(samples) == 2
    assert list(samples.columns["movieGenre2"]) == ["Animation", ""]
    assert list(samples.columns["userGenre1"]) == ["Drama", ""]
    assert samples.columns["movieAvgRating"][1] == pytest.approx(3.0)


BAD_FILES = [
    ("missing", None, "no such file"),
    ("empty", "", "empty"),
    ("header only", HEADER + "\n", "no rows"),
    (
        "missing column",
        HEADER.replace(",movieAvgRating", "") + "\n" + ROW + "\n",
        "line 1: missing column(s) movieAvgRating",
    ),
    (
        "text in numeric",
        HEADER + "\n" + ROW + "\n" + ROW.replace("3.91", "high") + "\n",
        "line 3, column movieAvgRating: 'high' is not a number",
    ),
    (
        "fractional id",
        HEADER + "\n" + ROW.replace("14887", "14887.5") + "\n",
        "line 2, column userId: '14887.5' is not an integer",
    ),
    (
        "id out of range",
        HEADER + "\n" + ROW.replace("14887", "30001") + "\n",
        "line 2, column userId: id 30001 is outside 0..30000",
    ),
    ("truncated row", HEADER + "\n" + ROW + "\n1,2,3\n", "line 3: 3 cells"),
]


@pytest.mark.parametrize("name,text,message", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_files_name_file_line_and_column(tmp_path, name, text, message):
    path = str(tmp_path / "missing.csv") if text is None else write(tmp_path, text)
    with pytest.raises(DataError) as info:
        read_samples(path)
    assert message in str(info.value)
    assert str(info.value).startswith(path)
    assert "\n" not in str(info.value)


def test_synthetic_has_the_course_schema_and_is_reproducible():
    a, b = generate_samples(3000, seed=1), generate_samples(3000, seed=1)
    assert len(a) == 3000
    for name, column in a.columns.items():
        np.testing.assert_array_equal(column, b.columns[name])
    for name, buckets in ID_FEATURES.items():
        assert a.columns[name].min() >= 0 and a.columns[name].max() < buckets
    for name in GENRE_FEATURES:
        assert set(a.columns[name]) <= set(GENRE_VOCAB) | {""}
    assert (a.columns["userGenre5"] == "").any(), "light users should have empty genre cells"
    for name in NUMERIC_FEATURES:
        assert a.columns[name].dtype == np.float32
    assert not np.array_equal(a.labels, generate_samples(3000, seed=2).labels)


def test_synthetic_popularity_is_skewed():
    samples = generate_samples(20000, seed=0)
    counts = np.sort(np.bincount(samples.columns["movieId"]))[::-1]
    # Zipf-like: the 10 most popular movies take a far larger share than 10 of ~1000 would.
    assert counts[:10].sum() / counts.sum() > 0.1


def test_synthetic_labels_follow_the_profile_features():
    samples = generate_samples(20000, seed=0)
    rating = samples.columns["movieAvgRating"] + samples.columns["userAvgRating"]
    high = samples.labels[rating > np.median(rating)].mean()
    low = samples.labels[rating <= np.median(rating)].mean()
    assert high - low > 0.15


def test_time_split_is_time_ordered():
    samples = generate_samples(1000, seed=3)
    train, test = time_split(samples)
    assert (len(train), len(test)) == (800, 200)
    assert train.columns["timestamp"].max() <= test.columns["timestamp"].min()
