"""Structural checks of a rewritten SavedModel against its original: functions of the ModelPair.

Each check answers one question a server would otherwise answer at load time or on its first
request: do all edges resolve, is every op known, do the signatures still promise the same
tensors, does the saver's restore run, and does every tensor of the original checkpoint live
on — unchanged, or as an EmbeddingVariable holding exactly the replaced table's rows.
"""

import numpy as np

from graphopt.checkpoint import OBJECT_GRAPH_KEY, compress
from graphopt.ev import contract
from graphopt.graph import meta_graphs
from graphopt.validate.loaders import (
    SessionModel,
    describe_failure,
    load_failures,
    register_graphopt_ops,
    signature_specs,
)
from graphopt.validate.report import CheckResult

# Object-graph metadata: legitimately different after a rewrite, compared through the loaders.
_CHECKPOINT_METADATA = (OBJECT_GRAPH_KEY,)
_MAX_FINDINGS = 8


def _truncate(findings):
    if len(findings) <= _MAX_FINDINGS:
        return findings
    return findings[:_MAX_FINDINGS] + [f"... and {len(findings) - _MAX_FINDINGS} more"]


def _table_rows(reader, key):
    """(keys, values) of the EmbeddingVariable saved under ``key``."""
    return (reader.get_tensor(contract.tensor_name(key, part)) for part in (contract.KEYS, contract.VALUES))


def check_node_inputs(pair):
    """Every node input, function return and signature tensor names something that exists."""
    model = pair.rewritten_graph
    findings = model.check()
    functions = model.functions()
    summary = (
        f"{len(model.graph)} graph nodes, {len(functions)} functions with "
        f"{sum(len(b) for b in functions)} nodes"
    )
    return CheckResult("node-inputs", "every node input resolves", not findings, summary, _truncate(findings))


def check_ops_registered(pair):
    """Every op of the graph and of every function body is known once graphopt's ops are loaded."""
    register_graphopt_ops()
    model = pair.rewritten_graph
    first_use = model.op_uses()
    findings = [
        f"op {op!r} (used by {first_use[op]}) is not registered: the model would fail to load; "
        "it needs an op library that defines it"
        for op in model.unregistered_ops()
    ]
    ours = pair.ev_ops
    summary = f"{len(first_use)} op types" + (f", including {', '.join(ours)}" if ours else "")
    return CheckResult("ops-registered", "every op is registered", not findings, summary, _truncate(findings))


def check_signatures(pair):
    """Same signature names, and in each the same inputs and outputs with the same dtypes and shapes."""
    original_meta, rewritten_meta = pair.original.meta_graph, pair.rewritten.meta_graph
    original, rewritten = signature_specs(original_meta), signature_specs(rewritten_meta)
    findings = []
    for name in sorted(set(original) - set(rewritten)):
        findings.append(f"signature {name!r} is missing from the rewritten model")
    for name in sorted(set(rewritten) - set(original)):
        findings.append(f"signature {name!r} is new in the rewritten model")
    for name in sorted(set(original) & set(rewritten)):
        a, b = original[name], rewritten[name]
        m1 = meta_graphs.signature_tensor_infos(original_meta)[name]["method"]
        m2 = meta_graphs.signature_tensor_infos(rewritten_meta)[name]["method"]
        if m1 != m2:
            findings.append(f"signature {name!r}: method {m2!r}, the original's is {m1!r}")
        for kind, x, y in (("input", a.inputs, b.inputs), ("output", a.outputs, b.outputs)):
            for key in sorted(set(x) - set(y)):
                extra = sorted(set(y) - set(x))
                hint = f" (the rewritten model has {', '.join(map(repr, extra))} instead)" if extra else ""
                findings.append(
                    f"signature {name!r}: {kind} {key!r} is missing from the rewritten model{hint}"
                )
            for key in sorted(set(y) - set(x)):
                findings.append(f"signature {name!r}: {kind} {key!r} is new in the rewritten model")
            for key in sorted(set(x) & set(y)):
                if x[key].dtype != y[key].dtype or x[key].shape != y[key].shape:
                    findings.append(
                        f"signature {name!r}: {kind} {key!r} is {y[key].describe()}, "
                        f"the original's is {x[key].describe()}"
                    )
    summary = (
        "; ".join(
            f"{n} ({_count(len(s.inputs), 'input')}, {_count(len(s.outputs), 'output')})"
            for n, s in original.items()
        )
        or "no serving signatures"
    )
    return CheckResult("signatures", "signatures match", not findings, summary, _truncate(findings))


def check_restore(pair):
    """Load the rewritten model the TF Serving way: its SaverDef restore and init op must run, and
    each EmbeddingVariable it restored must hold exactly the rows of the table it replaced."""
    try:
        model = SessionModel(pair.rewritten_dir, pair.tags)
    except load_failures() as exc:
        return CheckResult(
            "restore",
            "the saver's restore runs",
            False,
            "",
            [f"loading in a Session (restore op, then init op) failed: {describe_failure(exc)}"],
        )
    try:
        findings, restored = _restored_tables(model, pair)
    finally:
        model.close()
    restore_op = meta_graphs.restore_op_name(model.meta_graph)
    summary = (
        f"restore op {restore_op!r} and the init op ran"
        if restore_op
        else ("the model has no saver (no variables to restore)")
    )
    if restored:
        summary += f"; {_count(restored, 'restored EmbeddingVariable')} holding exactly the original rows"
    return CheckResult("restore", "the saver's restore runs", not findings, summary, _truncate(findings))


def _restored_tables(model, pair):
    """Exports each table's EmbeddingVariable from the restored session and compares its rows."""
    reader = _checkpoint(pair.original)
    handles = set(meta_graphs.graph_nodes_of_op(model.meta_graph, contract.HANDLE.name))
    tables = [t for t in pair.tables if len(t.handles) == 1 and t.handles[0] in handles and t.checkpoint_key]
    if reader is None or not tables:
        return [], 0
    from graphopt.ops.library import load_library

    lib, findings = load_library(), []
    with model.graph.as_default():
        exports = {
            t.name: lib.graphopt_ev_export(model.graph.get_tensor_by_name(f"{t.handles[0]}:0"), dim=t.dim)
            for t in tables
        }
    held = model.session.run({name: (keys, values) for name, (keys, values, _, _) in exports.items()})
    for t in tables:
        keys, values = held[t.name]
        rows = reader.get_tensor(t.checkpoint_key)
        if t.checkpoint_key in pair.compressed:  # a compressed table holds exactly its rows quantized
            row_dtype = pair.compressed[t.checkpoint_key]
            rows = compress.dequantize(*compress.quantize(rows, row_dtype), row_dtype)
        findings += [
            f"after the Session restore, {f}"
            for f in compare_table_rows(t.name, rows, keys, values, t.row_ids(t.rows))
        ]
    return findings, len(tables)


def check_lookup_wiring(pair):
    """Each lookup of a converted table reads that table's EmbeddingVariable, and no other."""
    model = pair.rewritten_graph
    graph = model.graph
    converted = [
        t
        for t in pair.tables
        if graph.node(t.handles[0]) is not None and graph.node(t.handles[0]).op == contract.HANDLE.name
    ]
    reads = {}  # (body, node) of each find op -> the tables whose handle reaches it
    for table in converted:
        for body, use in model.trace_variable(table.handles[0]):
            node = body.node(use.node)
            if node.op in contract.FIND_OPS:
                reads.setdefault((body.name, node.name), []).append(table.name)
    findings, expected = [], set()
    for table in converted:
        for site in table.sites:
            expected.add((site.body, site.node))
            got = reads.get((site.body, site.node))
            if got == [table.name]:
                continue
            if got:
                findings.append(
                    f"lookup {site.where} read table {table.name!r} in the original; in the "
                    f"rewritten model it reads {', '.join(map(repr, got))}"
                )
                continue
            node = model.bodies.get(site.body) and model.body(site.body).node(site.node)
            what = "is gone" if node is None else f"is a {node.op} that reads no EmbeddingVariable"
            findings.append(f"lookup {site.where} of table {table.name!r} {what} in the rewritten model")
    for (body, node), names in sorted(reads.items()):
        if (body, node) not in expected:
            findings.append(
                f"{body or 'graph'}:{node} reads {', '.join(map(repr, names))} where the "
                "original gathered from no table"
            )
    sites = sum(len(t.sites) for t in converted)
    summary = f"{_count(sites, 'lookup')} of {_count(len(converted), 'converted table')}"
    return CheckResult(
        "lookup-wiring",
        "each lookup reads the table it read before",
        not findings,
        summary,
        _truncate(findings),
    )


def _checkpoint(source):
    """A reader of the model's checkpoint, or None for a model without variables."""
    import tensorflow as tf

    if source.checkpoint_prefix is None:
        return None
    return tf.train.load_checkpoint(source.checkpoint_prefix)


def check_checkpoint(pair):
    """Every tensor of the original checkpoint is in the rewritten one with the same value, or
    was turned into an EmbeddingVariable holding exactly the table's rows.

    The original's tables (``pair.tables``) say which id each stored row of a table has; a
    table not among them is taken to store id ``i`` in row ``i``.
    """
    row_ids = {t.checkpoint_key: t.row_ids for t in pair.tables if t.checkpoint_key}
    reader_a, reader_b = _checkpoint(pair.original), _checkpoint(pair.rewritten)
    title = "checkpoint tensors and embedding tables hold the original values"
    if reader_a is None:
        ok = reader_b is None
        return CheckResult(
            "checkpoint",
            title,
            ok,
            "neither model has variables" if ok else "",
            [] if ok else ["the rewritten model has variables, the original none"],
        )
    if reader_b is None:
        return CheckResult(
            "checkpoint", title, False, "", ["the rewritten model has no variables/ checkpoint"]
        )
    # A compressed rewrite's tables are left to the compressed-rows check (graphopt.validate.compression).
    skip = set(_CHECKPOINT_METADATA) | {
        n for k in pair.compressed for n in (k, *contract.compressed_tensor_names(k))
    }
    shapes_a = {k: v for k, v in reader_a.get_variable_to_shape_map().items() if k not in skip}
    shapes_b = {k: v for k, v in reader_b.get_variable_to_shape_map().items() if k not in skip}
    # An EmbeddingVariable is saved as all four parts (a stock hash table's -keys/-values are not one).
    tables = {
        t
        for t in map(contract.table_key_of, shapes_b)
        if t is not None and all(name in shapes_b for name in contract.table_tensor_names(t))
    }
    table_parts = {name for t in tables for name in contract.table_tensor_names(t)}
    findings, same, rows, exact, missing, differs = [], 0, 0, 0, [], {}
    for key in sorted(shapes_a):
        value = reader_a.get_tensor(key)
        if key in tables:
            ids = row_ids[key](value.shape[0]) if key in row_ids and value.ndim == 2 else None
            found = compare_table_rows(key, value, *_table_rows(reader_b, key), ids)
            findings += found
            rows += value.shape[0] if value.ndim else 0
            exact += not found
        elif key in shapes_b:
            found = _compare_tensor(key, value, reader_b.get_tensor(key))
            if found:
                missing.append(key)
                differs[key] = found
            same += not found
        else:
            missing.append(key)
    # A model re-exported after conversion (Keras's model.export() of graphopt.keras.convert's
    # model) numbers its variables afresh: a tensor absent under its key may be under another,
    # and a table may be an EmbeddingVariable under another key, holding exactly its rows.
    unclaimed = sorted((set(shapes_b) - set(shapes_a) - table_parts) | set(differs))
    free_tables = sorted(set(tables) - set(shapes_a))
    n_tables, moved, used = len(set(tables) & set(shapes_a)), 0, set()
    for key in missing:
        value = reader_a.get_tensor(key)
        match = next(
            (
                k
                for k in unclaimed
                if list(shapes_b[k]) == list(value.shape)
                and not _compare_tensor(key, value, reader_b.get_tensor(k))
            ),
            None,
        )
        table = (
            None
            if match or value.ndim != 2
            else next(
                (t for t in free_tables if not compare_table_rows(key, value, *_table_rows(reader_b, t))),
                None,
            )
        )
        if match:
            unclaimed.remove(match)
            same, moved = same + 1, moved + 1
        elif table:  # one table may back several keys (Keras saves a variable in two lists)
            used.add(table)
            rows, exact, n_tables = rows + value.shape[0], exact + 1, n_tables + 1
        elif key in differs:
            findings += differs[key]
        else:
            findings.append(
                f"checkpoint tensor {key!r} {list(value.shape)} is missing from the rewritten "
                "checkpoint (neither kept nor converted to an EmbeddingVariable)"
            )
    for key in sorted(set(free_tables) - used):
        n_tables += 1
        findings.append(f"EmbeddingVariable {key!r} replaces no tensor of the original checkpoint")
    extra = [k for k in unclaimed if k not in shapes_a]
    summary = f"{_count(same, 'tensor')} identical" + (f" ({moved} under another key)" if moved else "")
    if n_tables and exact == n_tables:
        summary += f", {_count(n_tables, 'embedding table')} holding all {rows} rows"
    elif n_tables:
        summary += (
            f", {exact} of {_count(n_tables, 'embedding table')} ({rows} rows) holding exactly their rows"
        )
    if extra:
        summary += f"; {len(extra)} new tensors ({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})"
    return CheckResult("checkpoint", title, not findings, summary, _truncate(findings))


def compare_table_rows(name, table, keys, values, row_ids=None):
    """Findings (empty when it matches) for an EmbeddingVariable's keys/values against a dense table.

    ``row_ids`` gives the id of each stored row (a mod-partitioned table interleaves them);
    by default row ``i`` is id ``i``.
    """
    table, keys, values = np.asarray(table), np.asarray(keys), np.asarray(values)
    where = f"EmbeddingVariable {name!r}"
    if table.ndim != 2:
        return [f"{where}: the original tensor is {list(table.shape)}, not a [rows, dim] table"]
    if values.ndim != 2 or values.shape[1] != table.shape[1] or values.shape[0] != keys.shape[0]:
        return [
            f"{where}: holds values {list(values.shape)} for {keys.shape[0]} keys; "
            f"the table is {list(table.shape)}"
        ]
    ids = np.arange(table.shape[0], dtype=np.int64) if row_ids is None else np.asarray(row_ids, np.int64)
    findings = []
    missing = np.setdiff1d(ids, keys)
    extra = np.setdiff1d(keys, ids)
    if missing.size:
        findings.append(
            f"{where}: {missing.size} of the table's {table.shape[0]} ids are missing "
            f"(first: {_few(missing)})"
        )
    if extra.size:
        findings.append(f"{where}: {extra.size} keys are not ids of the table (first: {_few(extra)})")
    unique, counts = np.unique(keys, return_counts=True)
    if (counts > 1).any():
        findings.append(f"{where}: keys held more than once: {_few(unique[counts > 1])}")
    order = np.argsort(ids, kind="stable")
    present = np.isin(keys, ids)
    held = keys[present]
    expected, got = table[order[np.searchsorted(ids, held, sorter=order)]], values[present]
    differ = ~((expected == got) | (np.isnan(expected) & np.isnan(got)))
    if differ.any():
        bad_rows = np.unique(np.nonzero(differ)[0])
        r = int(bad_rows[0])
        c = int(np.argmax(differ[r]))
        findings.append(
            f"{where}: {bad_rows.size} rows differ from the table (first: id {int(held[r])}, column {c}: "
            f"original {_scalar(expected[r, c])}, rewritten {_scalar(got[r, c])})"
        )
    return findings


def _compare_tensor(key, a, b):
    if a.dtype != b.dtype or a.shape != b.shape:
        return [
            f"checkpoint tensor {key!r}: rewritten is {b.dtype}{list(b.shape)}, "
            f"original {a.dtype}{list(a.shape)}"
        ]
    if a.dtype.kind in "fc":
        differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    else:
        differ = a != b
    if not np.any(differ):
        return []
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(differ)), np.shape(differ)))
    return [
        f"checkpoint tensor {key!r}: {int(np.sum(differ))} of {a.size} elements differ "
        f"(first at {list(index)}: original {_scalar(a[index])}, rewritten {_scalar(b[index])})"
    ]


def _scalar(x):
    return repr(x.item() if hasattr(x, "item") else x)


def _count(n, noun):
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _few(ids, n=5):
    return ", ".join(str(int(i)) for i in ids[:n]) + (", ..." if len(ids) > n else "")


# The structural checks, in report order; check_lookup_wiring only where the rewritten model
# has EmbeddingVariables (a stock-target rewrite has none).
STRUCTURAL_CHECKS = (
    check_node_inputs,
    check_ops_registered,
    check_signatures,
    check_restore,
    check_checkpoint,
)


def run_structural_checks(pair):
    """All structural checks of ``pair.rewritten`` against ``pair.original``, in report order."""
    checks = STRUCTURAL_CHECKS + ((check_lookup_wiring,) if pair.ev_ops else ())
    return [check(pair) for check in checks]
