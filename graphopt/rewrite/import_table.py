"""``import_table``: a table trained elsewhere (HugeCTR, HKV, TFRA dumps) into a rewritten model's EV.

The model is copied to a new directory (atomically; the input is never modified) in which the
named EmbeddingVariable's checkpoint tensors (``K-keys``, ``-values``, ``-freqs``, ``-versions``)
hold the dump's rows; its optimizer slots and admission counters, which the dump does not carry,
are dropped (a restore gives fresh slots).
"""

import json
import os
import shutil

import numpy as np

from graphopt.checkpoint.conversion import convert_checkpoint
from graphopt.checkpoint.dumps import read_dump
from graphopt.checkpoint.index import checkpoint_tensors
from graphopt.errors import ModelError
from graphopt.ev import contract
from graphopt.graph import nodes
from graphopt.graph.model import TOP, ModelGraph
from graphopt.model_io import read_model
from graphopt.output import check_output_dir, staged_output

MANIFEST = contract.MANIFEST


def _tables(path, source):
    """{name: (checkpoint key, dim)} of the model's EVs, by handle name and by checkpoint key."""
    model = ModelGraph(source.meta_graph)
    keys = {}
    manifest = os.path.join(path if os.path.isdir(path) else os.path.dirname(path), MANIFEST)
    if os.path.isfile(manifest):
        with open(manifest) as f:
            for t in json.load(f).get("tables", []):
                if t.get("checkpoint_key"):
                    keys[t["name"]] = t["checkpoint_key"]
    out = {}
    for node in model.body(TOP).nodes():
        if node.op == contract.HANDLE.name:
            key = keys.get(node.name, node.name)
            dim = int(nodes.attr_value(node, "dim"))
            out[node.name] = out[key] = (key, dim)
    return out


def import_table(model, table, files, out, overwrite=False) -> dict:
    """Writes ``out``: ``model`` with table ``table`` holding the dump in ``files``."""
    model, out = os.fspath(model), os.fspath(out)
    source = read_model(model)
    tables = _tables(model, source)
    if table not in tables:
        names = sorted({k for k, _ in tables.values()})
        raise ModelError(
            f"{model} has no EmbeddingVariable {table!r}; its tables: {', '.join(names) or 'none'} "
            "(rewrite or migrate the model first)"
        )
    key, dim = tables[table]
    if source.checkpoint_prefix is None:
        raise ModelError(f"{model} has no checkpoint; pass the rewritten model with its variables")
    keys, values = read_dump(files, table, dim)
    check_output_dir(out, overwrite)
    infos = checkpoint_tensors(source.checkpoint_prefix)
    stale = tuple(n for n in infos if n.startswith(f"{key}-slot-") or n.startswith(f"{key}-pending-"))
    src_root = model if os.path.isdir(model) else os.path.dirname(model)
    with staged_output(out, overwrite=overwrite) as tmp:
        prefix: str = source.checkpoint_prefix

        def checkpoint_files(d, names):  # the checkpoint is written anew, not copied
            return [n for n in names if os.path.join(d, n).startswith((prefix + ".index", prefix + ".data-"))]

        shutil.copytree(src_root, tmp, ignore=checkpoint_files)
        dst = os.path.join(tmp, os.path.relpath(prefix, src_root))
        convert_checkpoint(
            source.checkpoint_prefix,
            dst,
            [],
            added={
                f"{key}-keys": keys,
                f"{key}-values": values,
                f"{key}-freqs": np.zeros([len(keys)], np.int64),
            },
            dropped=(f"{key}-versions", *stale),
        )
    return {
        "table": table,
        "checkpoint_key": key,
        "rows": int(len(keys)),
        "dim": dim,
        "output": out,
        "dropped": list(stale),
    }
