"""Coordinator/chief programs the distributed tests run as subprocesses.

``python -m tests.distribute.programs MODE OUTDIR``: each starts its own loopback cluster (tasks
in this process's group, so the test's fixture stops them with it), runs, writes
``OUTDIR/<MODE>.npz`` / ``.json`` and exits with ``os._exit`` (the coordinator's threads would
otherwise keep the process alive).

- ``pss``: ParameterServerStrategy, 2 PS + 1 worker; a custom training loop of ``STEPS`` steps
  (``ClusterCoordinator.schedule``, joined per step) on a 2-shard table and, in this process,
  the same steps on one local table; checkpoints after step ``CHECKPOINT_STEP`` and snapshots
  the table; then kills PS 1 and records the error the next step raises.
- ``pss-resume``: a fresh cluster restores that checkpoint and snapshots the table (must equal
  the snapshot taken at the checkpoint), restores the per-shard files ``save_parts`` wrote at the
  same step into 3 shards (must equal it too), then trains one more step.
- ``pss-kill-worker``: 2 workers, PS 1 of 2; worker 1 is killed after a few scheduled steps and
  restarted later; every step's keys must still be on the PS.
- ``tf1``: a TF1 graph placed by ``replica_device_setter`` and run by ``MonitoredTrainingSession``
  on worker 0; the same steps on one local table in a local session.
"""

import json
import os
import sys
import time
import traceback

import numpy as np

DIM = 8
STEPS = 6
CHECKPOINT_STEP = 4
BATCH = (32, 3)
CLUSTERS: list = []  # stopped on any error, so no task outlives this program


def batches(count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 500, size=BATCH).astype(np.int64) for _ in range(count)]


def snapshot(table):
    """(keys, values, slot) sorted by key, as NumPy (the table's content, order-free)."""
    import tensorflow as tf

    tensors = table._checkpoint_tensors() if hasattr(table, "_checkpoint_tensors") else None
    if tensors is None:
        from graphopt.ops.embedding_variable import checkpoint_tensors

        tensors = checkpoint_tensors(table)
    keys = tensors["-keys"].numpy()
    order = np.argsort(keys)
    out = {k.strip("-"): tf.convert_to_tensor(v).numpy()[order] for k, v in tensors.items()}
    return out


def _loss(rows):
    import tensorflow as tf

    return tf.reduce_sum(rows * rows * tf.range(1, DIM + 1, dtype=tf.float32))


def _pss(cluster, workers):
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster.spec), task_type="chief", task_id=0, rpc_layer="grpc"
    )
    strategy = tf.distribute.experimental.ParameterServerStrategy(resolver)
    return strategy, tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)


def _train_fn(strategy, table):
    import tensorflow as tf

    @tf.function
    def replica(ids, step):
        with tf.GradientTape() as tape:
            tape.watch(table.handles)
            loss = _loss(table.lookup(ids, insert_missing=True, step=step))
        table.apply_gradients(tape.gradient(loss, table.handles), step=step)
        return loss

    @tf.function
    def train(ids, step):
        return strategy.run(replica, args=(ids, step))

    return train


def _single_steps(data):
    import tensorflow as tf

    import graphopt

    single = graphopt.EmbeddingVariable(DIM, optimizer="adagrad", seed=7)
    snaps = []
    for step, ids in enumerate(data, 1):
        with tf.GradientTape() as tape:
            tape.watch(single.handle)
            loss = _loss(single.lookup(ids, insert_missing=True, step=step))
        single.apply_gradients(tape.gradient(loss, single.handle), step=step)
        snaps.append(snapshot(single))
    return snaps


def run_pss(outdir):
    import tensorflow as tf

    from graphopt.distribute import ShardedEmbeddingVariable, ps_devices
    from graphopt.distribute.loopback import LoopbackCluster

    cluster = LoopbackCluster(num_ps=2, num_workers=1, own_groups=False)
    CLUSTERS.append(cluster.start())
    strategy, coordinator = _pss(cluster, 1)
    data = batches(STEPS + 1)
    reference = _single_steps(data[:STEPS])
    with strategy.scope():
        table = ShardedEmbeddingVariable(DIM, devices=ps_devices(2), optimizer="adagrad", seed=7)
    train = _train_fn(strategy, table)
    result, arrays = {"equal_steps": []}, {}
    first_rows = table.lookup(data[0], insert_missing=False)  # nothing inserted yet: zeros
    arrays["first_rows"] = first_rows.numpy()
    for step in range(1, STEPS + 1):
        coordinator.schedule(train, args=(tf.constant(data[step - 1]), tf.constant(step, tf.int64)))
        coordinator.join()
        snap = snapshot(table)
        result["equal_steps"].append(
            all(np.array_equal(snap[k], reference[step - 1][k]) for k in reference[step - 1])
        )
        if step == CHECKPOINT_STEP:
            tf.train.Checkpoint(emb=table).write(os.path.join(outdir, "ckpt", "table"))
            table.save_parts(os.path.join(outdir, "parts", "table"))  # written by each PS task
            arrays.update({f"ckpt_{k}": v for k, v in snap.items()})
    lookup = table.lookup(data[0]).numpy()
    arrays["lookup"], arrays["reference_lookup"] = lookup, _reference_lookup(reference[-1], data[0])
    result["shard_sizes"] = table.shard_sizes().numpy().tolist()
    result["shard_devices"] = [s.handle.device for s in table.shards]
    cluster.kill("ps", 1)
    try:
        coordinator.schedule(train, args=(tf.constant(data[STEPS]), tf.constant(STEPS + 1, tf.int64)))
        coordinator.join()
        result["ps_failure"] = None
    except Exception as error:  # noqa: BLE001  (what the coordinator raises is the result)
        result["ps_failure"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    cluster.stop()
    return result, arrays


def _reference_lookup(snap, ids):
    rows = dict(zip(snap["keys"].tolist(), snap["values"], strict=True))
    return np.stack([rows.get(k, np.zeros(DIM, np.float32)) for k in ids.reshape(-1).tolist()]).reshape(
        ids.shape + (DIM,)
    )


def run_pss_resume(outdir):
    import tensorflow as tf

    from graphopt.distribute import ShardedEmbeddingVariable, ps_devices
    from graphopt.distribute.loopback import LoopbackCluster

    cluster = LoopbackCluster(num_ps=2, num_workers=1, own_groups=False)
    CLUSTERS.append(cluster.start())
    strategy, coordinator = _pss(cluster, 1)
    with strategy.scope():
        table = ShardedEmbeddingVariable(DIM, devices=ps_devices(2), optimizer="adagrad", seed=7)
    tf.train.Checkpoint(emb=table).read(os.path.join(outdir, "ckpt", "table")).assert_consumed()
    arrays = {f"restored_{k}": v for k, v in snapshot(table).items()}
    with strategy.scope():  # the per-PS parts, into 3 shards over the 2 PS tasks
        three = ShardedEmbeddingVariable(DIM, devices=ps_devices(3, 2), optimizer="adagrad", seed=7)
    three.restore_parts(os.path.join(outdir, "parts", "table"))
    arrays.update({f"parts_{k}": v for k, v in snapshot(three).items()})
    train = _train_fn(strategy, table)
    coordinator.schedule(train, args=(tf.constant(batches(1, seed=9)[0]), tf.constant(5, tf.int64)))
    coordinator.join()
    result = {"size_after_step": int(table.size().numpy())}
    cluster.stop()
    return result, arrays


def run_pss_kill_worker(outdir):
    import tensorflow as tf

    from graphopt.distribute import ShardedEmbeddingVariable, ps_devices
    from graphopt.distribute.loopback import LoopbackCluster

    cluster = LoopbackCluster(num_ps=2, num_workers=2, own_groups=False)
    CLUSTERS.append(cluster.start())
    strategy, coordinator = _pss(cluster, 2)
    with strategy.scope():
        table = ShardedEmbeddingVariable(DIM, devices=ps_devices(2), optimizer="adagrad", seed=7)
    train = _train_fn(strategy, table)
    data = batches(12, seed=3)
    results = []
    for step, ids in enumerate(data, 1):
        results.append(coordinator.schedule(train, args=(tf.constant(ids), tf.constant(step, tf.int64))))
        if step == 4:
            coordinator.join()  # both workers have run steps; now one dies mid-training
            cluster.kill("worker", 1)
        if step == 8:
            cluster.start_task("worker", 1)  # what a cluster manager does: the worker comes back
    coordinator.join()
    keys = np.unique(np.concatenate([d.reshape(-1) for d in data]))
    held = np.sort(snapshot(table)["keys"])
    result = {
        "losses_fetched": sum(1 for r in results if np.isfinite(r.fetch())),
        "steps": len(data),
        "keys_expected": int(keys.size),
        "keys_held": int(held.size),
        "all_keys_held": bool(np.array_equal(held, keys)),
    }
    cluster.stop()
    return result, {}


def run_tf1(outdir):
    import tensorflow as tf

    import graphopt
    from graphopt.distribute import ShardedEmbeddingVariable, ps_devices
    from graphopt.distribute.loopback import LoopbackCluster

    v1 = tf.compat.v1
    cluster = LoopbackCluster(num_ps=2, num_workers=1, chief=False, own_groups=False)
    CLUSTERS.append(cluster.start())
    data = batches(STEPS, seed=5)

    def build(sharded):
        ids = v1.placeholder(tf.int64, BATCH)
        step = v1.train.get_or_create_global_step()
        if sharded:
            table = ShardedEmbeddingVariable(
                DIM, devices=ps_devices(2), name="emb", optimizer="adagrad", seed=7
            )
            handles = table.handles
        else:
            table = graphopt.EmbeddingVariable(DIM, name="emb", optimizer="adagrad", seed=7)
            handles = [table.handle]
        rows = table.lookup(ids, insert_missing=True, step=step + 1)
        grads = tf.gradients(_loss(rows), handles)
        apply = table.apply_gradients(grads if sharded else grads[0], step=step + 1)
        with tf.control_dependencies([apply]):
            train = v1.assign_add(step, 1)
        return ids, train, table

    graph = tf.Graph()
    with graph.as_default():
        setter = v1.train.replica_device_setter(
            cluster=tf.train.ClusterSpec(cluster.spec), worker_device="/job:worker/task:0"
        )
        with v1.device(setter):
            ids, train, table = build(True)
            export = table.export()
        devices = sorted({op.device for op in graph.get_operations() if op.type.startswith("GraphoptEv")})
        checkpoint_dir = os.path.join(outdir, "tf1_ckpt")
        with v1.train.MonitoredTrainingSession(
            master=f"grpc://{cluster.spec['worker'][0]}",
            is_chief=True,
            checkpoint_dir=checkpoint_dir,
            save_checkpoint_steps=STEPS,
            save_summaries_steps=None,
            log_step_count_steps=None,
        ) as session:
            for batch in data:
                session.run(train, {ids: batch})
            sharded = session.run(export)
    local = tf.Graph()
    with local.as_default():
        ids, train, table = build(False)
        export = table.export()
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            for batch in data:
                session.run(train, {ids: batch})
            single = session.run(export)
    order_s, order_1 = np.argsort(sharded[0]), np.argsort(single[0])
    result = {
        "devices": devices,
        "equal": all(np.array_equal(a[order_s], b[order_1]) for a, b in zip(sharded, single, strict=True)),
        "checkpoint": v1.train.latest_checkpoint(checkpoint_dir),
    }
    cluster.stop()
    return result, {}


MODES = {"pss": run_pss, "pss-resume": run_pss_resume, "pss-kill-worker": run_pss_kill_worker, "tf1": run_tf1}

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")  # PSS: fail over instead of hanging
    mode, outdir = sys.argv[1], sys.argv[2]
    started = time.monotonic()
    try:
        result, arrays = MODES[mode](outdir)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        for cluster in CLUSTERS:
            cluster.stop()
        os._exit(1)
    result["seconds"] = round(time.monotonic() - started, 1)
    np.savez(os.path.join(outdir, f"{mode}.npz"), **arrays)
    with open(os.path.join(outdir, f"{mode}.json"), "w") as f:
        json.dump(result, f)
    sys.stdout.flush()
    os._exit(0)
