"""The inputs both models are run on: generated from signature specs, or read from a file.

Generated id inputs stay inside the valid range of the tables they feed (an id past the end
makes a stock Gather fail, which says nothing about the rewrite); the out-of-vocabulary case
is probed separately (oov.py). The generated cases are chosen to catch what a wrong rewrite
does: repeated ids in a batch, batch size 1, one large batch that reads every row of every
table at least once, and an empty batch.
"""

import dataclasses
import os
import re
from collections.abc import Callable, Sequence

import numpy as np

from graphopt.errors import DataError
from graphopt.tabular import read_csv_cells
from graphopt.validate.loaders import numpy_dtype
from graphopt.validate.vocabulary import UNKNOWN_WORDS

# Ids for an integer input whose tables are unknown: a range small enough for any table.
DEFAULT_ID_RANGE = (0, 10)
# The large batch grows to cover every id of the largest table, up to this many rows.
MAX_LARGE_BATCH = 65536
_STRING_TOKENS = tuple(f"token{i}" for i in range(8)) + ("",)
HASHED_WORD_PREFIX = "graphopt-hashed-"
# Distinct words per hash bucket of a hashed string input: 3 per bucket reach ~95% of the buckets.
WORDS_PER_BUCKET = 3


@dataclasses.dataclass(frozen=True)
class IdRange:
    """Valid ids ``low <= id < high`` for one integer input, and where that came from."""

    low: int
    high: int
    source: str  # "table NAME" (learned from the model), "given" (by the caller), or "default"

    @property
    def size(self):
        return self.high - self.low

    def describe(self):
        return f"[{self.low}, {self.high}) ({self.source})"


@dataclasses.dataclass
class InputCase:
    """One batch fed to both models."""

    name: str
    rows: int | None  # None for inputs without a batch dimension
    feeds: dict


@dataclasses.dataclass(frozen=True)
class InputPlan:
    """How inputs were chosen, for the report."""

    source: str  # "generated" or the data file's path
    inputs: dict  # input name -> one line: its spec and how its values were chosen
    id_ranges: dict  # integer input name -> IdRange


def is_batched(spec, uses=None):
    """Whether every input has a leading dimension of unknown size, so batch size can vary (a
    SparseTensor's dense shape, derived from its indices, aside)."""
    uses = uses or {}
    free = [s for k, s in spec.inputs.items() if getattr(uses.get(k), "role", "") != "dense-shape"]
    return bool(free) and all(s.shape is not None and len(s.shape) >= 1 and s.shape[0] is None for s in free)


def _concrete_shape(shape, rows):
    if shape is None:
        return (rows,)
    # Inner dimensions of unknown size get 1: the one size every model accepts.
    return tuple(rows if i == 0 and d is None else (1 if d is None else d) for i, d in enumerate(shape))


def resolve_id_ranges(spec, id_ranges=None, learned=None, uses=None):
    """An IdRange for every integer input: given ranges first, then learned ones, else the default.

    ``id_ranges`` maps an input name to a row count ``n`` (ids ``0..n-1``), a ``(low, high)``
    pair, or an IdRange; ``learned`` maps input names to IdRanges from the model's tables.
    """
    given = {**(learned or {}), **(id_ranges or {})}
    resolved = {}
    for name, s in spec.inputs.items():
        if not s.dtype.startswith(("int", "uint")) or getattr((uses or {}).get(name), "role", ""):
            continue  # sorted coordinates and dense shapes are derived, not drawn from a table
        r = given.get(name)
        if r is None:
            resolved[name] = IdRange(*DEFAULT_ID_RANGE, "default")
        elif isinstance(r, IdRange):
            resolved[name] = r
        elif isinstance(r, int):
            resolved[name] = IdRange(0, r, "given")
        else:
            low, high = r
            resolved[name] = IdRange(int(low), int(high), "given")
        if resolved[name].size <= 0:
            raise DataError(
                f"input {name!r}: empty id range {resolved[name].describe()}; give a positive row count"
            )
    return resolved


def _ids(rng, id_range, n, repeat):
    if n == 0:
        return np.zeros(0, np.int64)
    ids = rng.integers(id_range.low, id_range.high, size=n)
    if repeat and n >= 4:
        # A quarter-sized pool for half the batch: the same id several times in one batch,
        # the case unique/segment logic and hash-table lookups get wrong.
        pool = rng.integers(id_range.low, id_range.high, size=max(1, n // 8))
        half = rng.permutation(n)[: n // 2]
        ids[half] = rng.choice(pool, size=half.size)
    if n >= 2:
        ids[0], ids[-1] = id_range.low, id_range.high - 1  # both ends of the table
    return ids


def _covering_ids(rng, id_range, n):
    """n ids that read every id of the range at least once when n >= its size."""
    if id_range.size > 1 << 24:  # FOLDED_IDS: no batch covers it; spread the ids over it instead
        return _ids(rng, id_range, n, repeat=False)
    return rng.permutation(np.resize(np.arange(id_range.low, id_range.high, dtype=np.int64), n))


def _sorted_values(rng, shape, dtype):
    """Segment ids (rank 1: non-decreasing) or SparseTensor indices (rank 2: unique coordinates in
    row-major order, each row's columns 0, 1, ...), as the ops consuming them require."""
    n = shape[0]
    rows = np.sort(rng.integers(0, max(1, (n + 2) // 3), size=n))
    if len(shape) == 1:
        return rows.astype(dtype)
    out = np.zeros(shape, dtype)
    out[:, 0] = rows
    if shape[1] > 1 and n:
        starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
        out[:, -1] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    return out


def _row_splits(rng, values, dtype):
    """Row splits of a RaggedTensor over ``values`` values: 0 first, non-decreasing, ``values``
    last, about 3 values a row (empty rows included), as ``from_row_splits`` checks."""
    cuts = np.sort(rng.integers(0, values + 1, size=max(1, (values + 2) // 3) - 1))
    return np.r_[0, cuts, values].astype(dtype)


def _component(name):
    """(NAME, n) for a component input NAME_n of a composite argument, else (name, 0)."""
    match = re.fullmatch(r"(.+)_(\d+)", name)
    return (match.group(1), int(match.group(2))) if match else (name, 0)


def _values(rng, s, rows, id_range, vocabulary, mode, role=""):
    shape = _concrete_shape(s.shape, rows)
    n = int(np.prod(shape, dtype=np.int64))
    dtype = numpy_dtype(s.dtype)
    if role == "sorted":
        return _sorted_values(rng, shape, dtype)
    if id_range is not None:
        flat = _covering_ids(rng, id_range, n) if mode == "cover" else _ids(rng, id_range, n, repeat=True)
        return flat.astype(dtype).reshape(shape)
    if s.dtype == "string":
        words = vocabulary or _STRING_TOKENS
        picks = (
            np.resize(rng.permutation(len(words)), n)
            if mode == "cover"
            else rng.integers(0, len(words), size=n)
        )
        return np.array([words[i].encode() for i in picks], dtype=object).reshape(shape)
    if s.dtype == "bool":
        return rng.integers(0, 2, size=n).astype(bool).reshape(shape)
    if dtype.kind == "f" or s.dtype == "bfloat16":
        return rng.standard_normal(n).astype(dtype).reshape(shape)
    if dtype.kind == "c":
        return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype).reshape(shape)
    raise DataError(f"input {s.name!r}: cannot generate values of dtype {s.dtype}; give inputs with --data")


def _feeds(rng, spec, rows, ranges, vocabularies, uses, mode):
    """One batch: every input drawn as its consumers need, then each SparseTensor dense shape
    derived from the indices beside it (one past the largest coordinate in each dimension) and
    each RaggedTensor's row splits from the number of values beside them."""
    role = {k: getattr(uses.get(k), "role", "") for k in spec.inputs}
    derived = ("dense-shape", "row-splits")
    feeds = {
        k: _values(rng, s, rows, ranges.get(k), tuple(vocabularies.get(k, ())), mode, role[k])
        for k, s in spec.inputs.items()
        if role[k] not in derived
    }
    # Every free input has ``rows`` along its leading dimension: the ragged values the splits cut.
    # A tf.RaggedTensorSpec argument NAME is flattened to NAME (values), NAME_1 (outermost splits),
    # NAME_2, ...: each splits tensor cuts the rows of the next inner one, so they are made inside out.
    nested = {}
    for k in spec.inputs:
        if role[k] == "row-splits":
            prefix, number = _component(k)
            nested.setdefault(prefix, []).append((number, k))
    for components in nested.values():
        size = rows
        for _, k in sorted(components, reverse=True):
            feeds[k] = _row_splits(rng, size, numpy_dtype(spec.inputs[k].dtype))
            size = len(feeds[k]) - 1
    for k, s in spec.inputs.items():
        if role[k] == "dense-shape":
            rank = (s.shape or [2])[0] or 2
            coords = [
                v for j, v in feeds.items() if role[j] == "sorted" and v.ndim == 2 and v.shape[1] == rank
            ]
            high = np.max(np.concatenate(coords), axis=0) + 1 if coords and sum(map(len, coords)) else 1
            feeds[k] = np.maximum(np.ones(rank, np.int64), high).astype(numpy_dtype(s.dtype))
    return {k: feeds[k] for k in spec.inputs}


def generate_cases(spec, id_ranges, vocabularies=None, batches=4, batch_size=64, seed=0, uses=None):
    """The generated input cases for one signature, and the plan describing them.

    ``uses`` ({input: InputUse}, from ``consumers.input_uses``) says which inputs must be sorted
    coordinates or dense shapes rather than free values."""
    vocabularies, uses = vocabularies or {}, uses or {}
    rng = np.random.default_rng(seed)
    ranges = resolve_id_ranges(spec, id_ranges, uses=uses)
    cases = []
    batched = is_batched(spec, uses)

    def case(name, rows, mode="random"):
        cases.append(
            InputCase(
                name, rows if batched else None, _feeds(rng, spec, rows, ranges, vocabularies, uses, mode)
            )
        )

    for i in range(batches):
        case(f"random-{i}", batch_size)
    large = 0
    if batched:
        case("batch-1", 1)
        largest = max([r.size for r in ranges.values()] + [len(w) for w in vocabularies.values()] + [0])
        large = min(max(4 * batch_size, largest), MAX_LARGE_BATCH)
        case("large", large, mode="cover")
        case("empty", 0)
    described = {
        k: f"{s.describe()}: {_describe_values(s, ranges.get(k), vocabularies.get(k), large, uses.get(k))}"
        for k, s in spec.inputs.items()
    }
    return cases, InputPlan("generated", described, ranges)


def _describe_values(s, id_range, vocabulary, large, use=None):
    role = getattr(use, "role", "")
    if role == "sorted":
        return (
            "sorted segment ids"
            if s.shape is not None and len(s.shape) == 1
            else "SparseTensor indices: unique coordinates in row-major order"
        )
    if role == "dense-shape":
        return "SparseTensor dense shape: one past the largest index in each dimension"
    if role == "row-splits":
        return "RaggedTensor row splits: from 0 to the number of values, non-decreasing"
    if id_range is not None:
        text = f"ids in {id_range.describe()}, repeated within batches"
        if large:
            read = min(large, id_range.size)
            text += f"; the large batch reads {'all ' if read == id_range.size else ''}{read}"
            text += "" if read == id_range.size else f" of {id_range.size}"
        if id_range.source == "default":
            text += "; range unknown, give it with --id-range NAME=ROWS"
        return text
    if s.dtype == "string":
        if not vocabulary:
            return f"{len(_STRING_TOKENS)} made-up words (vocabulary unknown)"
        unknown = sum(w in UNKNOWN_WORDS for w in vocabulary)
        hashed = sum(w.startswith(HASHED_WORD_PREFIX) for w in vocabulary)
        text = f"words from a {len(vocabulary) - unknown - hashed}-word vocabulary"
        text += f" and {unknown} unknown word" if unknown else ""
        buckets = getattr(use, "hash_buckets", 0)
        return text + (
            f" and {hashed} distinct made-up words for its {buckets} hash buckets" if hashed else ""
        )
    if s.dtype == "bool":
        return "random booleans"
    return "standard normal values"


def one_row_feeds(spec, id_ranges, vocabularies=None, seed=0, uses=None):
    """A valid one-row batch: the base the out-of-vocabulary probes vary one input of."""
    uses = uses or {}
    rng = np.random.default_rng(seed)
    return _feeds(
        rng, spec, 1, resolve_id_ranges(spec, id_ranges, uses=uses), vocabularies or {}, uses, "random"
    )


# A reader of a data format of its own (a plug-in, e.g. graphopt.course.data.samples_reader):
# (path) -> {column: values} for a file it recognises, None for any other.
DataReader = Callable[[str], dict | None]


def read_data_cases(path, spec, batches=None, batch_size=64, uses=None, readers: Sequence[DataReader] = ()):
    """Input cases from a CSV (a column per signature input) or an .npz (an array per input), or
    from a file one of ``readers`` recognises (tried first, in order).

    An .npz whose arrays are not row-aligned, or a signature whose inputs are not (SparseTensor
    components, row splits), is one batch fed exactly as given."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file; give a .csv or .npz with a column per signature input")
    if path.endswith(".npz"):
        columns = _read_npz(path)
    else:
        # A format with a reader of its own checks every cell it reads; else a column per input.
        read = (c for c in (reader(path) for reader in readers) if c is not None)
        columns = next(read, None) or _read_csv(path, spec)
    missing = [k for k in spec.inputs if k not in columns]
    if missing:
        raise DataError(
            f"{path}: no column for signature {spec.name!r} input(s) {', '.join(missing)}; "
            f"it needs {', '.join(spec.inputs)}"
        )
    lengths = {len(columns[k]) for k in spec.inputs}
    ragged = any(getattr(u, "role", "") == "row-splits" for u in (uses or {}).values())
    if path.endswith(".npz") and (len(lengths) != 1 or ragged or not is_batched(spec, uses)):
        feeds = {k: _as_given(path, columns[k], s) for k, s in spec.inputs.items()}
        described = {k: f"{s.describe()}: array {k!r} as given" for k, s in spec.inputs.items()}
        return [InputCase("data-0", None, feeds)], InputPlan(
            path + " (one batch as the signature takes it)", described, {}
        )
    if len(lengths) != 1:
        raise DataError(f"{path}: the input columns have different lengths {sorted(lengths)}")
    total = lengths.pop()
    if total == 0:
        raise DataError(f"{path}: no rows; give at least one")
    feeds = {k: _shape_column(path, columns[k], s) for k, s in spec.inputs.items()}
    cases = []
    for i, start in enumerate(range(0, total, batch_size)):
        if batches is not None and i >= batches:
            break
        rows = min(batch_size, total - start)
        cases.append(InputCase(f"data-{i}", rows, {k: v[start : start + rows] for k, v in feeds.items()}))
    described = {k: f"{s.describe()}: column {k!r}" for k, s in spec.inputs.items()}
    return cases, InputPlan(path, described, {})


def _as_given(path, array, s):
    """An .npz array fed as it is: the signature's dtype, and its rank and static dimensions."""
    values = _shape_column(path, array, dataclasses.replace(s, shape=None))
    if s.shape is not None and (
        values.ndim != len(s.shape)
        or any(d is not None and d != v for d, v in zip(s.shape, values.shape, strict=False))
    ):
        raise DataError(
            f"{path}: array {s.name!r} has shape {list(values.shape)}, the signature wants "
            f"{s.describe()}; store it as the signature takes it"
        )
    return values


def _shape_column(path, column, s):
    dtype = numpy_dtype(s.dtype)
    try:
        if s.dtype == "string":
            values = np.array(
                [v if isinstance(v, bytes) else str(v).encode() for v in column.ravel()], dtype=object
            ).reshape(column.shape)
        else:
            values = column.astype(dtype)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: column {s.name!r} is not {s.dtype} ({exc})") from None
    if s.shape is None:
        return values
    inner = tuple(1 if d is None else d for d in s.shape[1:])
    try:
        return values.reshape((values.shape[0],) + inner)
    except ValueError:
        raise DataError(
            f"{path}: column {s.name!r} has rows of shape {values.shape[1:]}, the signature wants "
            f"{s.describe()}"
        ) from None


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npz ({exc})") from None


def _read_csv(path, spec):
    raw = read_csv_cells(path, lambda header: [k for k in spec.inputs if k in header])
    columns = {}
    for k, cells in raw.items():
        s = spec.inputs[k]
        if s.dtype == "string":
            columns[k] = np.array([v.encode() for _, v in cells], dtype=object)
            continue
        dtype = numpy_dtype(s.dtype)
        values = np.empty(len(cells), dtype)
        for j, (line_no, v) in enumerate(cells):
            try:
                values[j] = int(v) if dtype.kind in "iu" else float(v)
            except ValueError:
                raise DataError(f"{path}, line {line_no}: column {k!r} holds {v!r}, not {s.dtype}") from None
        columns[k] = values
    return columns


# Ids of an input the model hashes or folds itself (FloorMod): any integer is valid, and ids far
# outside the bucket range are what a collisionless migration keys by.
FOLDED_IDS = IdRange(-(2**40), 2**40, "any id: the model hashes or folds it into its buckets")


def table_id_ranges(tables, folded=frozenset()):
    """{signature: {input: IdRange}} from ``inspect_model``'s tables: the rows of the tables each input feeds.

    An input feeding several tables gets the smallest, so that every generated id is a valid
    row of each of them; an input in ``folded`` ("sig:key") gets FOLDED_IDS.
    """
    ranges = {}
    for table in tables:
        for ref in table.signature_inputs:
            signature, _, name = ref.partition(":")
            if ref in folded:
                ranges.setdefault(signature, {})[name] = FOLDED_IDS
                continue
            current = ranges.setdefault(signature, {}).get(name)
            if current is None or table.rows < current.size:
                ranges[signature][name] = IdRange(0, table.rows, f"table {table.name}")
    return ranges
