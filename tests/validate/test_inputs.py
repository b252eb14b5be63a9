import numpy as np
import pytest

from graphopt.errors import DataError
from graphopt.validate.inputs import IdRange, generate_cases, one_row_feeds, read_data_cases
from graphopt.validate.loaders import SignatureSpec, TensorSpecInfo

SPEC = SignatureSpec(
    "serving_default",
    {
        "movieId": TensorSpecInfo("movieId", "int64", (None, 1)),
        "genre": TensorSpecInfo("genre", "string", (None,)),
        "rating": TensorSpecInfo("rating", "float32", (None, 2)),
    },
    {"out": TensorSpecInfo("out", "float32", (None, 1))},
)


def test_generated_cases_cover_batch_sizes_ranges_and_repeats():
    cases, plan = generate_cases(
        SPEC, {"movieId": 1001}, {"genre": ["Drama", "Comedy"]}, batches=3, batch_size=64
    )
    by_name = {c.name: c for c in cases}
    assert [c.name for c in cases] == ["random-0", "random-1", "random-2", "batch-1", "large", "empty"]
    assert by_name["batch-1"].feeds["movieId"].shape == (1, 1)
    assert by_name["empty"].feeds["movieId"].shape == (0, 1) and by_name["empty"].feeds["rating"].shape == (
        0,
        2,
    )
    for c in cases:
        ids = c.feeds["movieId"]
        assert ids.dtype == np.int64 and ((ids >= 0) & (ids < 1001)).all()
        assert set(c.feeds["genre"].tolist()) <= {b"Drama", b"Comedy"}
        assert c.feeds["rating"].dtype == np.float32
    random_ids = by_name["random-0"].feeds["movieId"].ravel()
    assert len(np.unique(random_ids)) < len(random_ids)  # repeated ids within a batch
    assert random_ids[0] == 0 and random_ids[-1] == 1000  # both ends of the table
    large = by_name["large"].feeds["movieId"].ravel()
    assert set(large.tolist()) == set(range(1001))  # every row read at least once
    assert plan.id_ranges["movieId"] == IdRange(0, 1001, "given")
    assert "the large batch reads all 1001" in plan.inputs["movieId"]


def test_unknown_ranges_use_a_small_default_and_say_so():
    cases, plan = generate_cases(SPEC, None, batches=1, batch_size=8)
    assert all((c.feeds["movieId"] < 10).all() for c in cases)
    assert "range unknown" in plan.inputs["movieId"]


def test_inputs_are_reproducible_and_ranges_validated():
    a = one_row_feeds(SPEC, {"movieId": (5, 9)}, seed=3)
    b = one_row_feeds(SPEC, {"movieId": (5, 9)}, seed=3)
    assert a["movieId"].shape == (1, 1) and 5 <= a["movieId"][0, 0] < 9
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(DataError, match="empty id range"):
        generate_cases(SPEC, {"movieId": 0})


def test_unbatched_signature_keeps_fixed_shapes():
    spec = SignatureSpec(
        "s", {"x": TensorSpecInfo("x", "float32", (3,)), "k": TensorSpecInfo("k", "int32", ())}, {}
    )
    cases, _ = generate_cases(spec, {"k": 4}, batches=2)
    assert [c.name for c in cases] == ["random-0", "random-1"]
    assert cases[0].feeds["x"].shape == (3,) and cases[0].feeds["k"].shape == () and cases[0].rows is None


def test_csv_columns_named_like_inputs(tmp_path):
    path = tmp_path / "rows.csv"
    rows = ["movieId,rating,genre,ignored"] + [f"{i},{i / 2},Drama,x" for i in range(5)]
    path.write_text("\n".join(rows) + "\n")
    spec = SignatureSpec("s", {k: SPEC.inputs[k] for k in ("movieId", "genre")}, {})
    cases, plan = read_data_cases(str(path), spec, batch_size=2)
    assert [c.rows for c in cases] == [2, 2, 1] and plan.source == str(path)
    assert cases[0].feeds["movieId"].tolist() == [[0], [1]]
    assert cases[2].feeds["genre"].tolist() == [b"Drama"]
    cases, _ = read_data_cases(str(path), spec, batches=1, batch_size=2)
    assert len(cases) == 1


def test_csv_errors_name_the_problem(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("movieId,genre\n1,Drama\nabc,Comedy\n")
    spec = SignatureSpec("s", {k: SPEC.inputs[k] for k in ("movieId", "genre")}, {})
    with pytest.raises(DataError, match=r"line 3: column 'movieId' holds 'abc', not int64"):
        read_data_cases(str(path), spec)
    with pytest.raises(DataError, match=r"no column for signature 's' input\(s\) rating"):
        read_data_cases(str(path), SignatureSpec("s", {"rating": SPEC.inputs["rating"]}, {}))
    with pytest.raises(DataError, match="no such file"):
        read_data_cases(str(tmp_path / "missing.csv"), spec)


def test_npz_arrays_named_like_inputs(tmp_path):
    path = tmp_path / "rows.npz"
    np.savez(path, movieId=np.arange(6).reshape(6, 1), rating=np.ones((6, 2)))
    spec = SignatureSpec("s", {k: SPEC.inputs[k] for k in ("movieId", "rating")}, {})
    cases, _ = read_data_cases(str(path), spec, batch_size=4)
    assert [c.rows for c in cases] == [4, 2]
    assert cases[0].feeds["rating"].dtype == np.float32 and cases[1].feeds["movieId"].tolist() == [[4], [5]]


def test_the_course_sample_csv_goes_through_its_own_reader(tmp_path):
    from graphopt.course.data.samples import GENRE_FEATURES, ID_FEATURES, LABEL, NUMERIC_FEATURES, TIMESTAMP

    header = [*ID_FEATURES, LABEL, TIMESTAMP, *GENRE_FEATURES, *NUMERIC_FEATURES]
    row = {**{k: "7" for k in header}, **{g: "Drama" for g in GENRE_FEATURES}, LABEL: "1"}
    path = tmp_path / "samples.csv"
    path.write_text(",".join(header) + "\n" + ",".join(row[k] for k in header) + "\n")
    spec = SignatureSpec(
        "s",
        {
            "movieId": TensorSpecInfo("movieId", "int64", (None,)),
            "userGenre1": TensorSpecInfo("userGenre1", "string", (None,)),
            "movieAvgRating": TensorSpecInfo("movieAvgRating", "float32", (None,)),
        },
        {},
    )
    cases, _ = read_data_cases(str(path), spec)
    assert cases[0].feeds["movieId"].tolist() == [7] and cases[0].feeds["userGenre1"].tolist() == [b"Drama"]
    # The course reader's range check applies: an id past the model's buckets is bad input.
    path.write_text(
        ",".join(header) + "\n" + ",".join("99999" if k == "movieId" else row[k] for k in header) + "\n"
    )
    with pytest.raises(DataError, match="column movieId: id 99999 is outside 0..1000"):
        read_data_cases(str(path), spec)
