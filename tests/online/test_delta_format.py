"""The delta format: written staged and complete, read back exactly, every check refuses with a reason."""

import json
import os

import numpy as np
import pytest

from graphopt.online import DeltaError, TableDelta, read_delta, write_delta
from graphopt.online.delta_format import MANIFEST, DeltaIncomplete, model_fingerprint, sequences
from tests.online.online_models import DIM, save_row_model


@pytest.fixture
def version(tmp_path):
    return save_row_model(tmp_path / "base" / "3")


def part(name="table", keys=(1, 2), removed=(7,), dim=DIM):
    keys = np.asarray(keys, np.int64)
    values = np.arange(len(keys) * dim, dtype=np.float32).reshape(-1, dim)
    return TableDelta(name, keys, values, keys * 10, np.asarray(removed, np.int64))


def test_round_trip_with_a_self_describing_manifest(version):
    path = write_delta(version, [part()], since_step=4, up_to_step=20)
    assert path == os.path.join(version, "deltas", "1") and sequences(version) == [1]
    assert [e for e in os.listdir(os.path.dirname(path)) if e != "1"] == []  # the stage is gone
    manifest = json.load(open(os.path.join(path, MANIFEST)))
    assert manifest["format"] == "graphopt-delta" and manifest["format_version"] == 1
    assert manifest["base_version"] == 3 and manifest["sequence"] == 1
    assert manifest["model_fingerprint"] == model_fingerprint(version)
    assert manifest["tables"] == [
        {
            "name": "table",
            "bundle": "table-0",
            "dim": DIM,
            "key_dtype": "int64",
            "dtype": "float32",
            "upserts": 2,
            "removals": 1,
        }
    ]
    assert set(manifest["files"]) == set(os.listdir(path)) - {MANIFEST}
    delta = read_delta(path, 3, model_fingerprint(version), {"table": DIM})
    (table,) = delta.tables
    expected = part()
    for field in ("keys", "values", "versions", "removed_keys"):
        np.testing.assert_array_equal(getattr(table, field), getattr(expected, field))
    assert (delta.since_step, delta.up_to_step, delta.upserts, delta.removals) == (4, 20, 2, 1)
    assert write_delta(version, [part(keys=(), removed=())]).endswith("2")


def test_writing_refuses_bad_parts_and_leaves_nothing(version):
    with pytest.raises(DeltaError, match="1-D integer"):
        write_delta(
            version, [TableDelta("t", np.array([1.5]), np.zeros((1, DIM)), np.array([1]), np.array([]))]
        )
    with pytest.raises(DeltaError, match="names each table once"):
        write_delta(version, [part(), part()])
    with pytest.raises(DeltaError, match="holds no saved_model.pb"):
        write_delta(os.path.dirname(version), [part()])
    assert sequences(version) == []
    assert [e for e in os.listdir(os.path.join(version, "deltas"))] == []


def _rewrite(path, **fields):
    manifest = json.load(open(os.path.join(path, MANIFEST)))
    manifest.update(fields)
    json.dump(manifest, open(os.path.join(path, MANIFEST), "w"))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: os.remove(os.path.join(p, MANIFEST)), "incomplete"),
        (lambda p: open(os.path.join(p, MANIFEST), "w").write("{"), "not valid JSON"),
        (lambda p: _rewrite(p, format="other"), "not a graphopt-delta manifest"),
        (lambda p: _rewrite(p, format_version=3), "format version 3"),
        (lambda p: _rewrite(p, sequence=2), "says it is delta 2"),
        (lambda p: _rewrite(p, base_version=4), "made for version 4"),
        (lambda p: _rewrite(p, model_fingerprint="sha256:x"), "another model"),
        (lambda p: os.remove(os.path.join(p, "table-0.index")), "table-0.index is missing"),
        (lambda p: open(os.path.join(p, "table-0.index"), "ab").write(b"x"), "truncated"),
        (
            lambda p: _rewrite(
                p, tables=[{"name": "table", "bundle": "table-0", "dim": 5, "upserts": 2, "removals": 1}]
            ),
            "has dim 5",
        ),
        (lambda p: _rewrite(p, tables=[{"name": "nope", "bundle": "table-0", "dim": DIM}]), "does not have"),
        (
            lambda p: _rewrite(
                p, tables=[{"name": "table", "bundle": "table-0", "dim": DIM, "upserts": 3, "removals": 1}]
            ),
            "manifest says 3",
        ),
        (lambda p: _rewrite(p, files=None), "lacks or mangles"),
    ],
)
def test_reading_refuses_each_fault_with_a_reason(version, damage, message):
    path = write_delta(version, [part()])
    damage(path)
    with pytest.raises(DeltaError, match=message) as info:
        read_delta(path, 3, model_fingerprint(version), {"table": DIM})
    assert isinstance(info.value, DeltaIncomplete) == (message == "incomplete")


def test_a_flipped_byte_fails_the_checksum(version):
    path = write_delta(version, [part()])
    data = os.path.join(path, "table-0.data-00000-of-00001")
    raw = bytearray(open(data, "rb").read())
    raw[0] ^= 1
    open(data, "wb").write(bytes(raw))
    with pytest.raises(DeltaError, match="CRC32C"):
        read_delta(path, 3, model_fingerprint(version), {"table": DIM})


def test_an_os_error_while_reading_is_a_refusal_naming_the_file(version, monkeypatch):
    """What serve's delta apply meets on a failing disk: a DeltaError it reports, not a crash."""
    import errno

    from graphopt.online import delta_format

    path = write_delta(version, [part()])

    def failing(file_path):
        raise OSError(errno.EIO, os.strerror(errno.EIO), file_path)

    monkeypatch.setattr(delta_format, "file_crc32c", failing)
    with pytest.raises(DeltaError, match=r"cannot read .*: input/output error") as info:
        read_delta(path, 3, model_fingerprint(version), {"table": DIM})
    assert f"cannot read {os.path.join(path, 'table-0.')}" in str(info.value)  # the file named


def test_writing_onto_a_full_disk_leaves_no_delta(version, monkeypatch):
    import errno

    import tensorflow as tf

    from graphopt.errors import OutputError

    def full(**_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tf.raw_ops, "SaveV2", full)
    with pytest.raises(OutputError, match="cannot write .*deltas/1: no space left on device"):
        write_delta(version, [part()])
    assert sequences(version) == [] and os.listdir(os.path.join(version, "deltas")) == []
