"""The tensor bundle index: a LevelDB-format table of key -> BundleEntryProto, read and written.

Rewriting the index lets a converted table keep its bytes where they are: KEY-values is the
old KEY entry under a new name, so the data files are copied as files and only the ids and
counters are written. The format is TensorFlow's core/lib/io/{format,block_builder,table}.cc.
"""

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_CRC_TABLE = []


def crc32c(data: bytes) -> int:
    if not _CRC_TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _CRC_TABLE.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(buf: bytes, pos: int):
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
        shared, pos = _read_varint(block, pos)
        non_shared, pos = _read_varint(block, pos)
        vlen, pos = _read_varint(block, pos)
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        out.append((key, block[pos:pos + vlen]))
        pos += vlen
    return out


class UnsupportedIndex(Exception):
    """The index uses a feature (compression) this reader does not handle."""


def _read_block(data: bytes, handle: bytes):
    offset, pos = _read_varint(handle, 0)
    size, _ = _read_varint(handle, pos)
    if data[offset + size] != 0:
        raise UnsupportedIndex("compressed block")
    return data[offset:offset + size]


def read_index(path):
    """[(key, value bytes)] of a bundle index file, in key order."""
    with open(path, "rb") as f:
        data = f.read()
    footer = data[-_FOOTER_LEN:]
    if int.from_bytes(footer[-8:], "little") != _TABLE_MAGIC:
        raise UnsupportedIndex("not a table")
    _, pos = _read_varint(footer, 0)
    _, pos = _read_varint(footer, pos)
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
