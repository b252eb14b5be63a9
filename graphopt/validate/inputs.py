"""The inputs both models are run on: generated from signature specs, or read from a file.

Generated id inputs stay inside the valid range of the tables they feed (an id past the end
makes a stock Gather fail, which says nothing about the rewrite); the out-of-vocabulary case
is probed separately (oov.py). The generated cases are chosen to catch what a wrong rewrite
does: repeated ids in a batch, batch size 1, one large batch that reads every row of every
table at least once, and an empty batch.
"""

import csv
import dataclasses
import os

import numpy as np

from graphopt.data.samples import REQUIRED_COLUMNS, read_csv_cells, read_samples
from graphopt.errors import DataError
from graphopt.validate.loaders import numpy_dtype
from graphopt.validate.vocabulary import UNKNOWN_WORDS

# Ids for an integer input whose tables are unknown: a range small enough for any table.
DEFAULT_ID_RANGE = (0, 10)
# The large batch grows to cover every id of the largest table, up to this many rows.
MAX_LARGE_BATCH = 65536
_STRING_TOKENS = tuple(f"token{i}" for i in range(8)) + ("",)


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


def is_batched(spec):
    """Whether every input has a leading dimension of unknown size, so batch size can vary."""
    return bool(spec.inputs) and all(
        s.shape is not None and len(s.shape) >= 1 and s.shape[0] is None for s in spec.inputs.values()
    )


def _concrete_shape(shape, rows):
    if shape is None:
        return (rows,)
    # Inner dimensions of unknown size get 1: the one size every model accepts.
    return tuple(rows if i == 0 and d is None else (1 if d is None else d) for i, d in enumerate(shape))


def resolve_id_ranges(spec, id_ranges=None, learned=None):
    """An IdRange for every integer input: given ranges first, then learned ones, else the default.

    ``id_ranges`` maps an input name to a row count ``n`` (ids ``0..n-1``), a ``(low, high)``
    pair, or an IdRange; ``learned`` maps input names to IdRanges from the model's tables.
    """
    given = {**(learned or {}), **(id_ranges or {})}
    resolved = {}
    for name, s in spec.inputs.items():
        if not s.dtype.startswith(("int", "uint")):
            continue
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
            raise DataError(f"input {name!r}: empty id range {resolved[name].describe()}; give a positive row count")
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
    return rng.permutation(np.resize(np.arange(id_range.low, id_range.high, dtype=np.int64), n))


def _values(rng, s, rows, id_range, vocabulary, mode):
    shape = _concrete_shape(s.shape, rows)
    n = int(np.prod(shape, dtype=np.int64))
    dtype = numpy_dtype(s.dtype)
    if id_range is not None:
        flat = _covering_ids(rng, id_range, n) if mode == "cover" else _ids(rng, id_range, n, repeat=True)
        return flat.astype(dtype).reshape(shape)
    if s.dtype == "string":
        words = vocabulary or _STRING_TOKENS
        picks = rng.integers(0, len(words), size=n)
        return np.array([words[i].encode() for i in picks], dtype=object).reshape(shape)
    if s.dtype == "bool":
        return rng.integers(0, 2, size=n).astype(bool).reshape(shape)
    if dtype.kind == "f" or s.dtype == "bfloat16":
        return rng.standard_normal(n).astype(dtype).reshape(shape)
    if dtype.kind == "c":
        return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype).reshape(shape)
    raise DataError(f"input {s.name!r}: cannot generate values of dtype {s.dtype}; give inputs with --data")


def generate_cases(spec, id_ranges, vocabularies=None, batches=4, batch_size=64, seed=0):
    """The generated input cases for one signature, and the plan describing them."""
    vocabularies = vocabularies or {}
    rng = np.random.default_rng(seed)
    ranges = resolve_id_ranges(spec, id_ranges)
    cases = []

    def case(name, rows, mode="random"):
        feeds = {
            k: _values(rng, s, rows, ranges.get(k), tuple(vocabularies.get(k, ())), mode)
            for k, s in spec.inputs.items()
        }
        cases.append(InputCase(name, rows if is_batched(spec) else None, feeds))

    for i in range(batches):
        case(f"random-{i}", batch_size)
    large = 0
    if is_batched(spec):
        case("batch-1", 1)
        largest = max([r.size for r in ranges.values()] + [0])
        large = min(max(4 * batch_size, largest), MAX_LARGE_BATCH)
        case("large", large, mode="cover")
        case("empty", 0)
    described = {k: f"{s.describe()}: {_describe_values(s, ranges.get(k), vocabularies.get(k), large)}"
                 for k, s in spec.inputs.items()}
    return cases, InputPlan("generated", described, ranges)


def _describe_values(s, id_range, vocabulary, large):
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
        text = f"words from a {len(vocabulary) - unknown}-word vocabulary"
        return text + (f" and {unknown} unknown word" if unknown else "")
    if s.dtype == "bool":
        return "random booleans"
    return "standard normal values"


def one_row_feeds(spec, id_ranges, vocabularies=None, seed=0):
    """A valid one-row batch: the base the out-of-vocabulary probes vary one input of."""
    rng = np.random.default_rng(seed)
    ranges = resolve_id_ranges(spec, id_ranges)
    vocabularies = vocabularies or {}
    return {k: _values(rng, s, 1, ranges.get(k), tuple(vocabularies.get(k, ())), "random")
            for k, s in spec.inputs.items()}


def read_data_cases(path, spec, batches=None, batch_size=64):
    """Input cases from a CSV (a column per signature input) or an .npz (an array per input)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file; give a .csv or .npz with a column per signature input")
    if path.endswith(".npz"):
        columns = _read_npz(path)
    elif _is_course_samples(path):
        # The project's sample format: its own reader checks every cell the model uses.
        columns = read_samples(path).features()
    else:
        columns = _read_csv(path, spec)
    missing = [k for k in spec.inputs if k not in columns]
    if missing:
        raise DataError(
            f"{path}: no column for signature {spec.name!r} input(s) {', '.join(missing)}; "
            f"it needs {', '.join(spec.inputs)}"
        )
    lengths = {len(columns[k]) for k in spec.inputs}
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


def _shape_column(path, column, s):
    dtype = numpy_dtype(s.dtype)
    try:
        if s.dtype == "string":
            values = np.array([v if isinstance(v, bytes) else str(v).encode() for v in column.ravel()],
                              dtype=object).reshape(column.shape)
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


def _is_course_samples(path):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = {h.strip() for h in next(csv.reader(f), [])}
    except (UnicodeDecodeError, csv.Error):
        return False  # _read_csv says what is wrong with it
    return set(REQUIRED_COLUMNS) <= header


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


def table_id_ranges(tables):
    """{signature: {input: IdRange}} from ``inspect_model``'s tables: the rows of the tables each input feeds.

    An input feeding several tables gets the smallest, so that every generated id is a valid
    row of each of them.
    """
    ranges = {}
    for table in tables:
        for ref in table.signature_inputs:
            signature, _, name = ref.partition(":")
            current = ranges.setdefault(signature, {}).get(name)
            if current is None or table.rows < current.size:
                ranges[signature][name] = IdRange(0, table.rows, f"table {table.name}")
    return ranges
