"""The node <-> learner protocol: length-prefixed frames (u32 big-endian
length, then the payload), each payload a safetensors document whose
``__metadata__`` holds ``kind`` (the message) and ``json`` (its other fields
as a JSON object); parameters are the document's F32 tensors.
"""

import json
import struct
from typing import Any, BinaryIO, Dict, Mapping, Optional, Tuple

import numpy as np

from . import safetensors

#: The protocol version this package speaks.
PROTOCOL_VERSION = 1
#: Largest frame read or written, in bytes (the node's default limit).
FRAME_BYTES_MAX = 1 << 30


class ProtocolError(Exception):
    """A frame or message that breaks the protocol."""


class Closed(ProtocolError):
    """The node closed the stream between frames."""


def read_frame(stream: BinaryIO, limit: int = FRAME_BYTES_MAX) -> bytes:
    """Reads one frame's payload."""
    header = _read_exact(stream, 4)
    if not header:
        raise Closed("stream closed")
    if len(header) < 4:
        raise ProtocolError("stream ended inside a frame header")
    (length,) = struct.unpack(">I", header)
    if length > limit:
        raise ProtocolError(f"frame of {length} bytes is over the limit of {limit}")
    payload = _read_exact(stream, length)
    if len(payload) < length:
        raise ProtocolError(f"stream ended inside a frame: {len(payload)} of {length} bytes")
    return payload


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    chunks = []
    got = 0
    while got < n:
        chunk = stream.read(min(n - got, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def write_frame(stream: BinaryIO, payload: bytes, limit: int = FRAME_BYTES_MAX) -> None:
    """Writes one frame and flushes."""
    if len(payload) > limit:
        raise ProtocolError(f"frame of {len(payload)} bytes is over the limit of {limit}")
    stream.write(struct.pack(">I", len(payload)))
    stream.write(payload)
    stream.flush()


def encode_message(kind: str, fields: Optional[Mapping[str, Any]] = None,
                   arrays: Optional[Mapping[str, np.ndarray]] = None) -> bytes:
    """A message as a safetensors document; arrays are stored as float32."""
    tensors = {name: np.asarray(a, dtype=np.float32) for name, a in (arrays or {}).items()}
    metadata = {"kind": kind, "json": json.dumps(dict(fields or {}), allow_nan=False)}
    return safetensors.encode(tensors, metadata)


def decode_message(payload: bytes) -> Tuple[str, Dict[str, Any], Dict[str, np.ndarray]]:
    """(kind, fields, arrays in layout order) of a message."""
    try:
        arrays, metadata = safetensors.decode(payload)
    except safetensors.SafetensorsError as e:
        raise ProtocolError(f"not a safetensors document: {e}") from None
    kind = metadata.get("kind")
    if kind is None:
        raise ProtocolError("the message has no kind in its __metadata__")
    try:
        fields = json.loads(metadata.get("json", "{}"))
    except json.JSONDecodeError as e:
        raise ProtocolError(f"{kind} message: bad fields: {e}") from None
    if not isinstance(fields, dict):
        raise ProtocolError(f"{kind} message: fields are not a JSON object")
    for name, array in arrays.items():
        if array.dtype != np.float32:
            raise ProtocolError(f"tensor {name} is {array.dtype}; the protocol carries float32")
    return kind, fields, arrays
