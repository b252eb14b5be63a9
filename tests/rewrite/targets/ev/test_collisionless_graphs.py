"""Collisionless detection and the migrate-collisionless pass on tiny hand-built graphs."""

import numpy as np

import graphopt.ops  # noqa: F401  (registers the fallback op, whose OpDef the pass adds)
from graphopt.analysis.id_chains import plan_migrations
from graphopt.graph import nodes
from graphopt.rewrite.targets.ev.migrate_collisionless import MigrateCollisionless
from graphopt.rewrite.targets.ev.replace_lookups import ReplaceLookups
from tests.rewrite.passes import graphs


def _dt(name):
    return (nodes.dtype_enum(name), "type")


def _with_ids(chain_nodes, ids="bucket"):
    """The TF1 graph of tests/rewrite/passes/graphs.py with the lookup's ids computed by ``chain_nodes``
    from a string placeholder ``raw`` (and ``other``, an int64 placeholder)."""
    mg = graphs.tf1_graph()
    mg.graph_def.node.extend(
        [
            nodes.make_node("Placeholder", "raw", (), {"dtype": _dt("string"), "shape": ([None], "shape")}),
            nodes.make_node("Placeholder", "other", (), {"dtype": _dt("int64"), "shape": ([None], "shape")}),
            *chain_nodes,
        ]
    )
    lookup = next(n for n in mg.graph_def.node if n.name == "lookup")
    lookup.input[1] = ids
    return mg


def _hash(name="bucket", src="raw", buckets=graphs.ROWS):
    return nodes.make_node("StringToHashBucketFast", name, [src], {"num_buckets": (buckets, "i")})


def _binary(op, name, a, b):
    return nodes.make_node(op, name, [a, b], {"T": _dt("int64")})


def _migration(mg):
    ctx = graphs.context(mg)
    ctx.plan.migrations = plan_migrations(ctx.model, ctx.plan.tables)
    return ctx, ctx.plan.migrations[0]


def test_hash_bucket_migrates_and_the_pass_rewires_the_find():
    mg = _with_ids([_hash("h"), graphs._const("one", np.int64(1)), _binary("AddV2", "bucket", "h", "one")])
    ctx, migration = _migration(mg)
    assert (
        migration.possible and migration.chains[0].raw == "raw" and migration.chains[0].raw_dtype == "string"
    )
    before = graphs.op_counts(ctx.model.graph)
    ReplaceLookups().run(ctx)
    result = MigrateCollisionless().run(ctx)
    assert result.changed and result.matches == 1
    after = graphs.op_counts(ctx.model.graph)
    assert after.get("GraphoptEvFindWithFallback") == 1 and "GraphoptEvFind" not in after
    assert after["StringToHashBucketFast"] == before["StringToHashBucketFast"]  # the mapping is kept
    find = ctx.model.graph.node("lookup")
    assert [str(r) for r in ctx.model.graph.data_inputs(find)] == ["emb", "raw", "bucket"]
    assert nodes.attr_value(find, "Tids") == nodes.dtype_enum("string")
    assert "GraphoptEvFindWithFallback" in {op.name for op in mg.meta_info_def.stripped_op_list.op}
    assert MigrateCollisionless().check(ctx) == []
    # Broken on purpose: a site of the migrated table keyed by bucket again is reported.
    find.op = "GraphoptEvFind"
    ctx.model.invalidate()
    assert "not GraphoptEvFindWithFallback" in MigrateCollisionless().check(ctx)[0]


def test_floormod_of_an_integer_migrates_with_the_integer_as_raw_id():
    mg = _with_ids([graphs._const("n", np.int64(graphs.ROWS)), _binary("FloorMod", "bucket", "other", "n")])
    _, migration = _migration(mg)
    assert migration.possible and migration.chains[0].raw == "other"
    assert migration.chains[0].kinds == ["integer ids folded by FloorMod"]


def test_without_migrations_the_pass_matches_nothing():
    ctx = graphs.context(_with_ids([_hash()]))
    ReplaceLookups().run(ctx)
    assert MigrateCollisionless().match(ctx) == []


def test_not_possible_cases_name_their_reason():
    cases = {
        "indexes the rows directly": ([], "ids"),
        "mixes several raw inputs": (
            [
                _hash("h"),
                graphs._const("n", np.int64(4)),
                _binary("FloorMod", "f", "other", "n"),
                _binary("AddV2", "bucket", "h", "f"),
            ],
            "bucket",
        ),
        "also depends on other": ([_hash("h"), _binary("AddV2", "bucket", "h", "other")], "bucket"),
        "differs by position": (
            [
                _hash("h"),
                graphs._const("offsets", np.array([0, 5], np.int64)),
                _binary("AddV2", "bucket", "h", "offsets"),
            ],
            "bucket",
        ),
        "arbitrary subgraph (ReverseV2": (
            [
                _hash("h"),
                graphs._const("axis", np.array([0], np.int32)),
                nodes.make_node("ReverseV2", "r", ["h", "axis"], {"T": _dt("int64"), "Tidx": _dt("int32")}),
            ],
            "r",
        ),
        "deduplicates bucket ids": (
            [_hash("h"), nodes.make_node("Unique", "u", ["h"], {"T": _dt("int64"), "out_idx": _dt("int32")})],
            "u",
        ),
    }
    for reason, (chain, ids) in cases.items():
        ctx, migration = _migration(_with_ids(chain, ids))
        assert not migration.possible and reason in migration.reason, (reason, migration.reason)
        ReplaceLookups().run(ctx)
        assert MigrateCollisionless().match(ctx) == []  # left keyed by bucket


def test_every_site_must_migrate():
    # One hashed site and one direct site of the same table: the table is not migrated at all.
    mg = _with_ids([_hash()])
    mg.graph_def.node.extend(
        [
            nodes.make_node(
                "GatherV2",
                "lookup2",
                ["lookup/read", "ids", "lookup/axis"],
                {
                    "Tparams": _dt("float32"),
                    "Tindices": _dt("int64"),
                    "Taxis": _dt("int32"),
                    "batch_dims": (0, "i"),
                },
            ),
            nodes.make_node("AddV2", "out2", ["lookup", "lookup2"], {"T": _dt("float32")}),
        ]
    )
    ctx, migration = _migration(mg)
    assert len(migration.chains) == 2 and not migration.possible
    assert migration.reason.startswith("at graph:lookup2: nothing maps ids to rows")
    assert sorted(c.raw for c in migration.chains if c.possible) == ["raw"]  # the hashed site alone could
