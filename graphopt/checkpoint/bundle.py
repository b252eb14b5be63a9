"""The tensor bundle index: a LevelDB-format table of key -> BundleEntryProto, read and written.

Rewriting the index lets a converted table keep its bytes where they are: KEY-values is the
old KEY entry under a new name, so the data files are copied as files and only the ids and
counters are written. The format is TensorFlow's core/lib/io/{format,block_builder,table}.cc.
"""

import functools
import os

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_CRC_TABLE: list[int] = []
# TensorFlow's own CRC32C: abseil's hardware-accelerated ExtendCrc32cInternal(crc32c_t, string_view),
# exported by libtensorflow_framework (TF 2.21 pins this abseil release). Pure Python does ~10 MB/s,
# which would make checking a checkpoint slower than converting it; this does GB/s.
_ABSL_EXTEND_CRC32C = (
    "_ZN4absl12lts_2025081412crc_internal20ExtendCrc32cInternalENS0_8crc32c_tE"
    "St17basic_string_viewIcSt11char_traitsIcEE"
)


@functools.cache
def native_crc32c():
    """abseil's CRC32C extend function from TensorFlow's framework library, or None."""
    import ctypes

    import tensorflow as tf

    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(tf.__file__), "libtensorflow_framework.so.2"))
        fn = getattr(lib, _ABSL_EXTEND_CRC32C)
    except (OSError, AttributeError):
        return None
    # string_view is passed by value as (size, pointer) in two registers (x86-64 and aarch64 ABIs).
    fn.restype, fn.argtypes = ctypes.c_uint32, [ctypes.c_uint32, ctypes.c_size_t, ctypes.c_void_p]
    return fn


def crc32c_extend(crc: int, data) -> int:
    """CRC32C of the bytes hashed so far (``crc``, 0 at first) extended by ``data``
    (bytes, bytearray or a memoryview of one)."""
    view = memoryview(data).cast("B")
    if not view.nbytes:
        return crc
    fn = native_crc32c()
    if fn is None:
        return py_crc32c_extend(crc, view)
    if view.readonly:
        return fn(crc, view.nbytes, bytes(view))
    import ctypes

    return fn(crc, view.nbytes, ctypes.addressof(ctypes.c_char.from_buffer(view)))


def py_crc32c_extend(crc: int, data) -> int:
    """The same in pure Python: the fallback, and the reference the tests compare with."""
    if not _CRC_TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _CRC_TABLE.append(c)
    crc ^= 0xFFFFFFFF
    for b in bytes(data):
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c(data) -> int:
    return crc32c_extend(0, data)


def mask(crc: int) -> int:
    """TensorFlow's masked form of a CRC, as stored in index blocks and BundleEntryProtos."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def masked_crc(data) -> int:
    return mask(crc32c(data))


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(buf: bytes, pos: int):
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _block_entries(block: bytes):
    num_restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * num_restarts
    pos, key, out = 0, b"", []
    while pos < end:
        shared, pos = read_varint(block, pos)
        non_shared, pos = read_varint(block, pos)
        vlen, pos = read_varint(block, pos)
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        out.append((key, block[pos : pos + vlen]))
        pos += vlen
    return out


class UnsupportedIndex(Exception):
    """The index uses a feature (compression) this reader does not handle, or is damaged."""


def _read_block(data: bytes, handle: bytes):
    offset, pos = read_varint(handle, 0)
    size, _ = read_varint(handle, pos)
    if offset + size + 5 > len(data):
        raise UnsupportedIndex("a block lies past the end of the file: truncated")
    block = data[offset : offset + size + 1]
    if masked_crc(block) != int.from_bytes(data[offset + size + 1 : offset + size + 5], "little"):
        raise UnsupportedIndex("a block fails its CRC32C check")
    if block[-1] != 0:
        raise UnsupportedIndex("compressed block")
    return block[:-1]


def read_index(path):
    """[(key, value bytes)] of a bundle index file, in key order."""
    with open(path, "rb") as f:
        data = f.read()
    footer = data[-_FOOTER_LEN:]
    if len(data) < _FOOTER_LEN or int.from_bytes(footer[-8:], "little") != _TABLE_MAGIC:
        raise UnsupportedIndex("no table footer: truncated or not an index")
    _, pos = read_varint(footer, 0)
    _, pos = read_varint(footer, pos)
    index = _read_block(data, footer[pos:])
    return [e for _, handle in _block_entries(index) for e in _block_entries(_read_block(data, handle))]


def _block(entries) -> bytes:
    body, restarts = bytearray(), []
    for key, value in entries:
        restarts.append(len(body))
        body += _varint(0) + _varint(len(key)) + _varint(len(value)) + key + value
    if not restarts:
        restarts = [0]
    for r in restarts:
        body += r.to_bytes(4, "little")
    body += len(restarts).to_bytes(4, "little")
    return bytes(body)


def write_index(path, entries):
    """Writes sorted (key, value bytes) as a bundle index file (one data block, no compression)."""
    out = bytearray()

    def put(block):
        handle = _varint(len(out)) + _varint(len(block))
        out.extend(block + b"\x00" + masked_crc(block + b"\x00").to_bytes(4, "little"))
        return handle

    data_handle = put(_block(entries))
    meta_handle = put(_block([]))
    index_handle = put(_block([(entries[-1][0], data_handle)] if entries else []))
    footer = (meta_handle + index_handle).ljust(_FOOTER_LEN - 8, b"\x00") + _TABLE_MAGIC.to_bytes(8, "little")
    out.extend(footer)
    with open(path, "wb") as f:
        f.write(out)
