"""A combined ``.pdiparams`` file checked against the sizes it declares, without loading it.

Paddle writes each parameter as: uint32 version, uint64 LoD level count and the levels, uint32
tensor version, int32 size of a ``TensorDesc`` protobuf (field 1: data type, field 2: dims),
that protobuf, then the raw data. Walking the headers and seeking over the data finds a file
that ends early (a copy cut short), which Paddle itself loads silently with wrong outputs.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO, List, Tuple

# paddle.framework.proto.VarType data types -> bytes per element
_ITEM_SIZE = {0: 1, 1: 2, 2: 4, 3: 8, 4: 2, 5: 4, 6: 8, 19: 8, 20: 1, 21: 1, 22: 2, 23: 8, 24: 16}
_MAX_DESC = 1 << 20


class ParamsSizeError(ValueError):
    """The file is shorter than its own headers declare, or not a combined params file."""


def check_params_size(path: Path) -> int:
    """The number of parameters in ``path``; raises ``ParamsSizeError`` when it ends early."""
    size = os.path.getsize(path)
    count = 0
    with open(path, "rb") as fh:
        while fh.tell() < size:
            start = fh.tell()
            _read(fh, 4, start)
            (levels,) = struct.unpack("<Q", _read(fh, 8, start))
            for _ in range(min(levels, 64)):
                (level_bytes,) = struct.unpack("<Q", _read(fh, 8, start))
                _skip(fh, level_bytes, size, count)
            _read(fh, 4, start)
            (desc_size,) = struct.unpack("<i", _read(fh, 4, start))
            if not 0 <= desc_size <= _MAX_DESC:
                raise ParamsSizeError(f"parameter {count} at byte {start}: not a combined .pdiparams header")
            dtype, dims = _tensor_desc(_read(fh, desc_size, start))
            if dtype not in _ITEM_SIZE:
                raise ParamsSizeError(f"parameter {count} at byte {start}: unknown data type {dtype}")
            numel = 1
            for d in dims:
                numel *= d
            _skip(fh, numel * _ITEM_SIZE[dtype], size, count)
            count += 1
    return count


def _read(fh: BinaryIO, n: int, start: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise ParamsSizeError(f"the file ends inside the header of the parameter at byte {start}")
    return data


def _skip(fh: BinaryIO, n: int, size: int, index: int) -> None:
    end = fh.tell() + n
    if end > size:
        raise ParamsSizeError(f"parameter {index} declares {n} bytes of data, the file ends {end - size} bytes "
                              "short")
    fh.seek(end)


def _varint(buf: bytes, i: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ParamsSizeError("a TensorDesc header is damaged")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _tensor_desc(buf: bytes) -> Tuple[int, List[int]]:
    dtype, dims, i = -1, [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            if field == 1:
                dtype = value
            elif field == 2:
                dims.append(value)
        elif wire == 2:
            length, i = _varint(buf, i)
            end = i + length
            while field == 2 and i < end:
                value, i = _varint(buf, i)
                dims.append(value)
            i = end
        else:
            raise ParamsSizeError("a TensorDesc header is damaged")
    # int64 dims are two's complement varints: -1 (a dynamic dim) is never stored for parameters
    return dtype, [d if d < 1 << 63 else 0 for d in dims]
