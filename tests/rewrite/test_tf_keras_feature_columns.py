"""The course's feature-columns form (tf.feature_column embeddings under a tf_keras DenseFeatures in
a Sequential), rewritten: load_model revives DenseFeatures as graphopt.tf_keras.SavedTables and fit
trains its tables bit for bit as tf_keras trains the dense ones, new ids included."""

import itertools

import numpy as np
import pytest

tf_keras = pytest.importorskip("tf_keras")

import graphopt  # noqa: E402
from graphopt.course.data.synthetic import generate_samples  # noqa: E402
from graphopt.course.models import feature_column_form  # noqa: E402
from graphopt.course.models.features import Normalization, dataset  # noqa: E402
from graphopt.rewrite import rewrite_model  # noqa: E402

OPTIMIZERS = {
    "sgd": lambda: tf_keras.optimizers.SGD(0.1),
    "adagrad": lambda: tf_keras.optimizers.Adagrad(0.05),
}


def _batches(n, seed=3):
    samples = generate_samples(32 * n, seed=seed)
    return list(itertools.islice(iter(dataset(samples, batch_size=32)), n)), samples


def _build(root, optimizer):
    batches, samples = _batches(1)
    tf_keras.utils.set_random_seed(0)
    model = feature_column_form.build(Normalization.fit(samples))
    model.compile(OPTIMIZERS[optimizer](), "binary_crossentropy")
    model.predict(batches[0][0], verbose=0)
    src, out = str(root / f"fc_{optimizer}"), str(root / f"fc_{optimizer}_ev")
    model.save(src, save_format="tf")
    return src, out, rewrite_model(src, out)


def _rows(table):
    keys, values, *_ = table.export()
    return dict(zip(keys.numpy().tolist(), values.numpy(), strict=True))


def _dense_tables(model):
    return {
        [p for p in v.name.split("/") if p.endswith("_embedding")][0]: v.numpy()
        for v in model.layers[0].weights
    }


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_feature_column_tables_train_exactly_after_load_model(tmp_path, optimizer):
    src, out, report = _build(tmp_path, optimizer)
    assert report.plan.notes == []
    dense, dynamic = tf_keras.models.load_model(src), tf_keras.models.load_model(out)
    layer = dynamic.layers[0]
    assert isinstance(layer, graphopt.tf_keras.SavedTables)
    batches, _ = _batches(10)
    x0 = batches[0][0]
    np.testing.assert_array_equal(dynamic.predict(x0, verbose=0), dense.predict(x0, verbose=0))
    assert len(dynamic.trainable_weights) == len(dense.trainable_weights)
    before = {t.name: _rows(t) for t in layer.tables}
    for x, y in batches:
        assert dense.train_on_batch(x, y) == dynamic.train_on_batch(x, y)
    want = _dense_tables(dense)
    for table in layer.tables:
        rows = _rows(table)
        expected = want[table.name.removesuffix("_embedding_weights")]
        np.testing.assert_array_equal(np.stack([rows[i] for i in range(len(expected))]), expected, table.name)
    moved = [
        t.name
        for t in layer.tables
        if any(not np.array_equal(_rows(t)[k], v) for k, v in before[t.name].items())
    ]
    assert moved, "fit changed no table row"
    # A userId outside the column's buckets-as-converted gets a row when fit sees it.
    users = [t for t in layer.tables if t.name.startswith("userId")][0]
    x, y = batches[0]
    x = dict(x, userId=np.full_like(x["userId"].numpy(), 70_000))
    assert 70_000 not in _rows(users)
    dynamic.fit(x, y, verbose=0)
    assert 70_000 in _rows(users)
