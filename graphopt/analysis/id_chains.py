"""Collisionless migration: the id-mapping chain in front of each table, and whether it can migrate.

A table is usually indexed by a *bucket*: ``StringToHashBucketFast/Strong`` (Keras ``Hashing``,
``tf.strings.to_hash_bucket_fast``, hash columns), a vocabulary lookup ``LookupTableFindV2`` on a
``HashTableV2`` with OOV buckets (Keras ``StringLookup`` / ``IntegerLookup``, vocabulary
columns), an integer id folded by ``FloorMod``, or ``Bucketize``. Such a chain can migrate when the
lookup's ids are, element by element, a function of one raw tensor (the mapping op's input) and
constants: the rewrite then looks up the raw id's own key and falls back to the original bucket
(``GraphoptEvFindWithFallback``), which the original chain still computes beside the table. So
the migrated lookup returns what the original returned for every input, and training gives each
raw id its own row, initialised from its bucket's row.

Anything else is reported with the reason and left as it was; a table migrates only when every
lookup site of it can (never a partially migrated table).
"""

import dataclasses
import os

import numpy as np

from graphopt.analysis.tables import LookupSite, TableCandidate
from graphopt.graph import meta_graphs, nodes
from graphopt.graph.model import Body, ModelGraph, TensorRef

# Mapping op -> (what it is, the position of its raw-id input).
HASH_OPS = ("StringToHashBucketFast", "StringToHashBucketStrong", "StringToHashBucket")
MAPPING_OPS = {
    **{op: ("hash bucket", 0) for op in HASH_OPS},
    "LookupTableFindV2": ("vocabulary lookup", 1),
    "FloorMod": ("integer ids folded by FloorMod", 0),
    "Bucketize": ("bucketized value", 0),
}
# Ops whose output element i depends only on element i of each input (operands broadcast).
ELEMENTWISE_OPS = {
    "Identity",
    "Cast",
    "SelectV2",
    "Select",
    "AddV2",
    "Add",
    "Sub",
    "Mul",
    "Neg",
    "Abs",
    "Maximum",
    "Minimum",
    "FloorDiv",
    "Less",
    "LessEqual",
    "Greater",
    "GreaterEqual",
    "Equal",
    "NotEqual",
    "LogicalAnd",
    "LogicalOr",
    "LogicalNot",
    "StringToHashBucketFast",
    "StringToHashBucketStrong",
    "StringToHashBucket",
    "LookupTableFindV2",
    "FloorMod",
    "Mod",
    "Bucketize",
    "AsString",
}
# Inputs that are no element-wise data: a lookup's table handle and default value.
_SIDE_INPUTS = {"LookupTableFindV2": (0, 2)}
RAW_DTYPES = ("string", "int32", "int64")
CUSTOM_HASH_OPS = ("Fingerprint", "EagerPyFunc", "PyFunc", "PyFuncStateless")
# What may stand between a model input and the raw id: it moves or normalises ids, it does not
# compute them (a string length or a sum of features is no id).
RAW_PRODUCERS = (
    "Identity",
    "Cast",
    "Reshape",
    "ExpandDims",
    "Squeeze",
    "StringStrip",
    "StringLower",
    "StringUpper",
    "AsString",
)
_MAX_NODES = 200  # a chain larger than this is an arbitrary subgraph, not an id mapping


@dataclasses.dataclass
class IdChain:
    """The id mapping in front of one lookup site, and whether it can migrate."""

    site: LookupSite
    kinds: list[str]  # what maps the raw id to the bucket, e.g. ["vocabulary lookup", "hash bucket"]
    raw: str | None = None  # the raw-id tensor (in the site's body), when it can migrate
    raw_dtype: str | None = None
    reason: str | None = None  # why it cannot migrate (None: it can)

    @property
    def possible(self) -> bool:
        return self.reason is None

    def to_dict(self) -> dict:
        return {
            "where": self.site.where,
            "mapping": self.kinds,
            "raw": self.raw,
            "raw_dtype": self.raw_dtype,
            "possible": self.possible,
            "reason": self.reason,
        }


@dataclasses.dataclass
class TableMigration:
    """Whether a table can be keyed by raw ids: possible only when every site's chain can migrate."""

    table: TableCandidate
    chains: list[IdChain]
    reason: str | None = None

    @property
    def possible(self) -> bool:
        return self.reason is None

    @property
    def line(self) -> str:
        kinds = sorted({k for c in self.chains for k in c.kinds})
        what = f" ({', '.join(kinds)})" if kinds else ""
        if self.possible:
            return f"collisionless migration possible{what}"
        return f"collisionless migration not possible{what}, because {self.reason}"

    def to_dict(self) -> dict:
        return {
            "table": self.table.name,
            "possible": self.possible,
            "reason": self.reason,
            "line": self.line,
            "sites": [c.to_dict() for c in self.chains],
        }


def _const_scalar(body: Body, node) -> bool:
    """A Const whose elements are all equal (it adds the same to every position)."""
    value = nodes.const_value(node)
    return value.size <= 1 or bool(np.all(value.reshape(-1) == value.reshape(-1)[0]))


def _static(body: Body, ref: TensorRef, budget: list[int]) -> str | None:
    """None when ``ref`` depends on no model input (constants and shape arithmetic on them);
    else what it depends on."""
    node = body.node(ref.node)
    budget[0] -= 1
    if node is None:
        return f"function argument {ref.node}"
    if budget[0] < 0:
        return "too large a subgraph"
    if node.op == "Const":
        return None
    if node.op in ("Placeholder", "PlaceholderWithDefault"):
        return f"input {node.name}"
    for r in body.data_inputs(node):
        problem = _static(body, r, budget)
        if problem:
            return problem
    return None


def _mapping_upstream(body: Body, ref: TensorRef, limit=60) -> list[str]:
    """Mapping ops anywhere above ``ref`` (to name the chain of a site that cannot migrate)."""
    seen: set[str] = set()
    stack, found = [ref.node], []
    while stack and len(seen) < limit:
        name = stack.pop()
        node = body.node(name)
        if node is None or name in seen:
            continue
        seen.add(name)
        if node.op in MAPPING_OPS:
            found.append(MAPPING_OPS[node.op][0])
        stack.extend(r.node for r in body.data_inputs(node))
    return sorted(set(found))


def _custom_hash_upstream(body: Body, ref: TensorRef, limit=60) -> str | None:
    """A hash graphopt cannot reproduce above ``ref`` (a fingerprint, a Python function), or None."""
    seen: set[str] = set()
    stack = [ref.node]
    while stack and len(seen) < limit:
        node = body.node(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op in CUSTOM_HASH_OPS or ("Hash" in node.op and node.op not in HASH_OPS):
            return f"{node.op} {node.name}"
        stack.extend(r.node for r in body.data_inputs(node))
    return None


def _raw_computed_by(body: Body, ref: TensorRef) -> str | None:
    """The op computing the raw id from something else than a model input, or None."""
    node = body.node(ref.node)
    while node is not None and node.op in RAW_PRODUCERS:
        node = body.node(body.data_inputs(node)[0].node)
    if node is None or node.op in ("Placeholder", "PlaceholderWithDefault"):
        return None
    return f"{node.op} {node.name}"


def _raw_dtype(body: Body, node) -> str | None:
    if node.op in HASH_OPS:
        return "string"
    attr = "Tin" if node.op == "LookupTableFindV2" else "T"
    value = nodes.attr_value(node, attr)
    return nodes.dtype_name(value) if value is not None else None


def _raw_of(body: Body, node) -> tuple[TensorRef, str | None]:
    """The raw-id input of a mapping op; through ``AsString`` of an integer (Keras ``Hashing`` of
    integer ids formats them first), the integer itself: distinct ids stay distinct keys."""
    ref = body.data_inputs(node)[MAPPING_OPS[node.op][1]]
    dtype = _raw_dtype(body, node)
    src = body.node(ref.node)
    if (
        src is not None
        and src.op == "AsString"
        and not nodes.attr_value(src, "fill")
        and (nodes.attr_value(src, "width") or -1) < 0
        and nodes.dtype_name(nodes.attr_value(src, "T")) in ("int32", "int64")
    ):
        return body.data_inputs(src)[0], nodes.dtype_name(nodes.attr_value(src, "T"))
    return ref, dtype


def trace_chain(body: Body, site: LookupSite) -> IdChain:
    """Walks back from a site's ids through element-wise ops to the mapping ops and their raw input."""
    chain = IdChain(site, [])
    raws: dict[str, tuple[TensorRef, str | None]] = {}
    # A vocabulary lookup's default value (a captured constant) may be compared with its result.
    defaults = {str(body.data_inputs(n)[2]) for n in body.nodes() if n.op == "LookupTableFindV2"}
    aliases, direct = set(), set()  # mapping-op inputs (and the ids under AsString); inputs read
    stack, seen = [TensorRef.parse(site.ids)], set()
    while stack:
        ref = stack.pop()
        if (ref.node, ref.output, ref.index) in seen:
            continue
        seen.add((ref.node, ref.output, ref.index))
        if len(seen) > _MAX_NODES:
            chain.reason = "the ids are computed by too large a subgraph"
            return chain
        node = body.node(ref.node)
        if node is None or node.op in ("Placeholder", "PlaceholderWithDefault"):
            if str(ref) not in defaults:
                direct.add(str(ref))  # an input read directly: must be the raw id itself
            continue
        if node.op == "LookupTableSizeV2":
            continue  # the vocabulary size (StaticVocabularyTable's OOV offset): one scalar
        if node.op == "Const":
            if not _const_scalar(body, node):
                chain.reason = f"constant {node.name} differs by position"
                return chain
            continue
        if node.op not in ELEMENTWISE_OPS:
            upstream = _mapping_upstream(body, ref)
            chain.kinds = upstream
            if node.op == "Unique" and not upstream:
                chain.reason = (
                    "nothing maps ids to rows: the sparse lookup reads the ids directly (identity column)"
                )
            elif node.op == "Unique":
                chain.reason = (
                    "the sparse lookup (embedding_lookup_sparse) deduplicates bucket ids "
                    "before the gather, so ids sharing a bucket share one gathered row"
                )
            elif _custom_hash_upstream(body, ref):
                chain.reason = (
                    f"the bucket comes from a custom hash function ({_custom_hash_upstream(body, ref)})"
                )
            else:
                chain.reason = (
                    f"the bucket index is computed by an arbitrary subgraph ({node.op} {node.name})"
                )
            return chain
        if node.op in MAPPING_OPS and (
            node.op != "FloorMod" or not _static(body, body.data_inputs(node)[1], [_MAX_NODES])
        ):
            kind = MAPPING_OPS[node.op][0]
            chain.kinds.append(kind)
            if node.op == "Bucketize" and _raw_dtype(body, node) not in ("int32", "int64"):
                chain.reason = "Bucketize of a real value: its buckets are value ranges, not collisions"
                return chain
            raw, dtype = _raw_of(body, node)
            raws[str(raw)] = (raw, dtype)
            aliases.update({str(raw), str(body.data_inputs(node)[MAPPING_OPS[node.op][1]])})
            continue
        side = _SIDE_INPUTS.get(node.op, ())
        for pos, r in enumerate(body.data_inputs(node)):
            if pos in side:
                continue
            if (
                node.op in ("AddV2", "Add", "Sub", "Mul", "Maximum", "Minimum", "FloorDiv", "Mod")
                and body.node(r.node) is not None
                and body.node(r.node).op != "Const"
                and _static(body, r, [_MAX_NODES]) is None
            ):
                continue  # shape arithmetic (Keras' wrap of negative ids adds the row count)
            stack.append(r)
    chain.kinds = sorted(set(chain.kinds))
    if not raws:
        chain.reason = (
            f"nothing maps ids to rows: {sorted(direct)[0]} indexes the rows directly"
            if direct
            else "nothing maps ids to rows: the ids are constants"
        )
    elif direct - aliases:
        chain.reason = (
            f"the bucket index also depends on {sorted(direct - aliases)[0]}, not only on the raw id"
        )
    elif len(raws) > 1:
        chain.reason = f"the bucket index mixes several raw inputs ({', '.join(sorted(raws))})"
    else:
        raw, dtype = next(iter(raws.values()))
        custom = _custom_hash_upstream(body, raw)
        computed = _raw_computed_by(body, raw)
        if custom:
            chain.reason = f"the bucket comes from a custom hash function ({custom})"
        elif computed:
            chain.reason = f"the raw id is computed by an arbitrary subgraph ({computed})"
        elif dtype not in RAW_DTYPES:
            chain.reason = f"the raw ids are {dtype}; raw keys are made from string, int32 or int64 ids"
        else:
            chain.raw, chain.raw_dtype = str(raw), dtype
    return chain


def _mixed_mappings(chains: list[IdChain]) -> bool:
    by_dtype: dict[str, set] = {}
    for c in chains:
        by_dtype.setdefault("string" if c.raw_dtype == "string" else "int", set()).add(tuple(c.kinds))
    return any(len(kinds) > 1 for kinds in by_dtype.values())


def missing_assets(meta_graph, model_dir: str | None) -> list[str]:
    """Asset files the meta graph names that its SavedModel's assets/ folder lacks."""
    if model_dir is None or not os.path.isdir(model_dir):
        return []
    names = meta_graphs.asset_filenames(meta_graph)
    return [n for n in names if not os.path.exists(os.path.join(model_dir, "assets", n))]


def plan_migrations(
    model: ModelGraph, tables: list[TableCandidate], model_dir: str | None = None
) -> list[TableMigration]:
    """One TableMigration per table: the chain at each site, and whether the whole table migrates.

    ``model_dir``: the SavedModel, whose assets a vocabulary lookup may read its vocabulary from.
    """
    missing = missing_assets(model.meta_graph, model_dir)
    out = []
    for table in tables:
        chains = [trace_chain(model.body(s.body), s) for s in table.sites]
        for c in chains:
            if missing and c.possible and "vocabulary lookup" in c.kinds:
                # Which table an asset initializes is not traced: any missing file refuses them all.
                c.reason = (
                    f"vocabulary file {missing[0]} is missing from the model's assets "
                    "(copy the SavedModel again, assets/ included)"
                )
        reason = None
        if table.partition_strategy is not None:
            reason = "it is partitioned (its parts are looked up by bucket; not migrated)"
        elif table.shares_arguments_with:
            reason = f"its lookup function is shared with {table.shares_arguments_with[0]}"
        else:
            bad = next((c for c in chains if not c.possible), None)
            if bad is not None:
                reason = bad.reason if len(chains) == 1 else f"at {bad.site.where}: {bad.reason}"
            elif _mixed_mappings(chains):
                # One raw id would get one row for two different buckets: training could not
                # tell which bucket's row it starts from.
                reason = "two of its lookups map the same kind of raw id by different chains"
        out.append(TableMigration(table, chains, reason))
    return out


def folded_inputs(migrations: list[TableMigration]) -> set[str]:
    """Signature inputs ("sig:key") that reach tables only through an integer hash or ``FloorMod``:
    any integer is a valid id for them (validate draws them far outside the bucket range)."""
    folded: set[str] = set()
    other: set[str] = set()
    for m in migrations:
        for c in m.chains:
            hashed = c.possible and c.raw_dtype in ("int32", "int64") and "vocabulary lookup" not in c.kinds
            (folded if hashed else other).update(c.site.signature_inputs)
    return folded - other
