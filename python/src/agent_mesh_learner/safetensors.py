"""A pure-numpy reader and writer of the safetensors format.

A document is an 8-byte little-endian header length, a JSON header (tensor
name -> dtype, shape, data offsets; plus an optional ``__metadata__`` map of
strings), then the tensors' bytes. Tensors come back in data order (the
order they were written in), so a writer's order survives a round trip.
"""

import json
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

#: Largest header accepted, in bytes (the reference implementation's limit).
HEADER_BYTES_MAX = 100_000_000

_DTYPES = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
    "F64": np.dtype("<f8"),
}
_NAMES = {(dt.kind, dt.itemsize): name for name, dt in _DTYPES.items()}


class SafetensorsError(ValueError):
    """The bytes are not a valid safetensors document, or a tensor cannot be stored."""


def _dtype_name(array: np.ndarray) -> str:
    name = _NAMES.get((array.dtype.kind, array.dtype.itemsize))
    if name is None:
        raise SafetensorsError(f"dtype {array.dtype} cannot be stored in safetensors")
    return name


def encode(arrays: Mapping[str, np.ndarray], metadata: Optional[Mapping[str, str]] = None) -> bytes:
    """Serializes ``arrays`` (in their order) and ``metadata`` (strings only)."""
    header: Dict[str, object] = {}
    if metadata is not None:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise SafetensorsError("__metadata__ keys and values must be strings")
        header["__metadata__"] = dict(metadata)
    chunks = []
    offset = 0
    for name, array in arrays.items():
        if name == "__metadata__" or not isinstance(name, str):
            raise SafetensorsError(f"invalid tensor name {name!r}")
        array = np.asarray(array)
        dtype_name = _dtype_name(array)
        data = np.ascontiguousarray(array, dtype=_DTYPES[dtype_name]).tobytes()
        header[name] = {
            "dtype": dtype_name,
            "shape": [int(d) for d in array.shape],
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def _entry(name: str, info: object, data_len: int) -> Tuple[np.dtype, Tuple[int, ...], int, int]:
    if not isinstance(info, dict):
        raise SafetensorsError(f"tensor {name}: header entry is not an object")
    dtype = _DTYPES.get(info.get("dtype"))
    if dtype is None:
        raise SafetensorsError(f"tensor {name}: unsupported dtype {info.get('dtype')!r}")
    shape = info.get("shape")
    offsets = info.get("data_offsets")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise SafetensorsError(f"tensor {name}: bad shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_len
    ):
        raise SafetensorsError(f"tensor {name}: bad data_offsets {offsets!r}")
    count = 1
    for d in shape:
        count *= d
    if count * dtype.itemsize != offsets[1] - offsets[0]:
        raise SafetensorsError(
            f"tensor {name}: shape {shape} of {info['dtype']} needs {count * dtype.itemsize} bytes, "
            f"offsets give {offsets[1] - offsets[0]}"
        )
    return dtype, tuple(shape), offsets[0], offsets[1]


def decode(data: bytes) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Parses a document: (tensors in data order, metadata). Arrays are writable copies."""
    if len(data) < 8:
        raise SafetensorsError("shorter than the 8-byte header length")
    n = int.from_bytes(data[:8], "little")
    if n > HEADER_BYTES_MAX or 8 + n > len(data):
        raise SafetensorsError(f"header length {n} does not fit a document of {len(data)} bytes")
    try:
        header = json.loads(bytes(data[8 : 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise SafetensorsError("__metadata__ must map strings to strings")
    body = memoryview(data)[8 + n :]
    entries = sorted(
        ((name,) + _entry(name, info, len(body)) for name, info in header.items()),
        key=lambda e: (e[3], e[4]),
    )
    expected = 0
    arrays: Dict[str, np.ndarray] = {}
    for name, dtype, shape, start, end in entries:
        if start != expected:
            raise SafetensorsError(f"tensor {name}: data starts at {start}, expected {expected}")
        expected = end
        arrays[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(shape).copy()
    if expected != len(body):
        raise SafetensorsError(f"tensors cover {expected} of {len(body)} data bytes")
    return arrays, dict(metadata)


def save_file(arrays: Mapping[str, np.ndarray], path: str, metadata: Optional[Mapping[str, str]] = None) -> None:
    """Writes ``arrays`` to ``path`` as safetensors."""
    with open(path, "wb") as f:
        f.write(encode(arrays, metadata))


def load_file(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Reads a safetensors file: (tensors, metadata)."""
    with open(path, "rb") as f:
        return decode(f.read())
