"""The serve loop: connect to the node, answer its requests, exit on shutdown.

The node starts the learner with the path of a Unix socket in
``AGENT_MESH_LEARNER_SOCKET``; the frames travel on that connection, so the
learner's stdout and stderr stay free for the user's own output (the node
logs both). An exception in ``fit`` or ``evaluate`` becomes an ``error``
reply and the learner keeps serving; a broken frame from the node ends it.
"""

import os
import socket
import sys
import traceback
from typing import Any, BinaryIO, Dict, Mapping, Optional

import numpy as np

from .learner import Learner
from .protocol import (
    FRAME_BYTES_MAX,
    PROTOCOL_VERSION,
    Closed,
    ProtocolError,
    decode_message,
    encode_message,
    read_frame,
    write_frame,
)

#: Environment variable holding the node's socket path.
SOCKET_ENV = "AGENT_MESH_LEARNER_SOCKET"
#: Longest error message sent to the node, in characters.
ERROR_CHARS_MAX = 4000


def _float32_arrays(arrays: Mapping[str, Any], what: str) -> Dict[str, np.ndarray]:
    if not isinstance(arrays, Mapping):
        raise TypeError(f"{what} must return a mapping of name -> array, got {type(arrays).__name__}")
    return {str(name): np.asarray(value, dtype=np.float32) for name, value in arrays.items()}


def _fit_reply(learner: Learner, fields: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> bytes:
    result = learner.fit(arrays, dict(fields.get("config", {})))
    if not isinstance(result, tuple) or len(result) != 3:
        raise TypeError("fit must return (parameters, num_examples, metrics)")
    parameters, num_examples, metrics = result
    fields_out = {"num_examples": int(num_examples), "metrics": _metrics(metrics)}
    return encode_message("fit", fields_out, _float32_arrays(parameters, "fit"))


def _evaluate_reply(learner: Learner, fields: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> bytes:
    result = learner.evaluate(arrays, dict(fields.get("config", {})))
    if not isinstance(result, tuple) or len(result) != 3:
        raise TypeError("evaluate must return (loss, num_examples, metrics)")
    loss, num_examples, metrics = result
    if not np.isfinite(float(loss)):
        raise ValueError(f"evaluate returned a non-finite loss ({loss})")
    fields_out = {"loss": float(loss), "num_examples": int(num_examples), "metrics": _metrics(metrics)}
    return encode_message("evaluate", fields_out)


def _metrics(metrics: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Metrics as JSON values: numpy scalars become Python numbers; a
    non-finite number becomes None (JSON has no NaN)."""
    out: Dict[str, Any] = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, (np.generic,)):
            value = value.item()
        if isinstance(value, float) and not np.isfinite(value):
            value = None
        out[str(key)] = value
    return out


def handle(learner: Learner, payload: bytes) -> Optional[bytes]:
    """The reply to one request payload; None for ``shutdown``."""
    kind, fields, arrays = decode_message(payload)
    if kind == "shutdown":
        return None
    try:
        if kind == "hello":
            name = str(learner.describe().get("name", learner.name))
            return encode_message("hello", {"protocol_version": PROTOCOL_VERSION, "learner_name": name})
        if kind == "layout":
            return encode_message("layout", {}, _float32_arrays(learner.parameters(), "parameters"))
        if kind == "fit":
            return _fit_reply(learner, fields, arrays)
        if kind == "evaluate":
            return _evaluate_reply(learner, fields, arrays)
    except Exception as e:  # the user's code raised: tell the node, keep serving
        traceback.print_exc(file=sys.stderr)
        message = f"{type(e).__name__}: {e}"[:ERROR_CHARS_MAX]
        return encode_message("error", {"message": message})
    return encode_message("error", {"message": f"unknown request kind {kind!r}"})


def serve_stream(learner: Learner, stream: BinaryIO, frame_limit: int = FRAME_BYTES_MAX) -> None:
    """Answers requests from ``stream`` until shutdown or the end of the stream."""
    while True:
        try:
            payload = read_frame(stream, frame_limit)
        except Closed:
            return
        reply = handle(learner, payload)
        if reply is None:
            return
        write_frame(stream, reply, frame_limit)


def serve(learner: Learner, socket_path: Optional[str] = None) -> None:
    """Connects to the node (``AGENT_MESH_LEARNER_SOCKET``) and serves ``learner``."""
    path = socket_path or os.environ.get(SOCKET_ENV)
    if not path:
        sys.exit(
            f"{SOCKET_ENV} is not set: a learner is started by an agent-mesh node "
            "(or by `agent-mesh learner check -- COMMAND`)"
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    stream = sock.makefile("rwb")
    try:
        serve_stream(learner, stream)
    except ProtocolError as e:
        sys.exit(f"agent_mesh_learner: the node sent a bad frame: {e}")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the node went away
    finally:
        try:
            stream.close()
        finally:
            sock.close()
