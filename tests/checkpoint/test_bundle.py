"""The bundle index codec on bytes: CRC32C, and write_index/read_index round trips."""

import pytest

from graphopt.checkpoint import bundle


def test_crc32c_matches_the_published_check_value():
    # The CRC-32C (Castagnoli) check value of "123456789" (RFC 3720, B.4).
    assert bundle.crc32c(b"123456789") == 0xE3069283
    assert bundle.crc32c(b"") == 0


def test_masked_crc_is_leveldbs_rotation_plus_delta():
    crc = bundle.crc32c(b"abc")
    assert bundle.masked_crc(b"abc") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@pytest.mark.parametrize(
    "entries",
    [
        [],
        [(b"", b"header")],
        [(b"", b"h"), (b"a", b"1"), (b"a/b", b"x" * 300), (b"b" * 200, b"")],
    ],
)
def test_index_round_trip(tmp_path, entries):
    path = str(tmp_path / "ckpt.index")
    bundle.write_index(path, entries)
    assert bundle.read_index(path) == entries


def test_a_file_that_is_not_a_table_is_refused(tmp_path):
    path = tmp_path / "ckpt.index"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(bundle.UnsupportedIndex):
        bundle.read_index(str(path))


def test_a_compressed_block_is_refused(tmp_path):
    path = tmp_path / "ckpt.index"
    bundle.write_index(str(path), [(b"a", b"1")])
    data = bytearray(path.read_bytes())
    data[len(bundle._block([(b"a", b"1")]))] = 1  # the data block's compression byte: snappy
    path.write_bytes(bytes(data))
    with pytest.raises(bundle.UnsupportedIndex):
        bundle.read_index(str(path))
