"""Frames and messages."""

import io
import struct
import unittest

import numpy as np

from agent_mesh_learner import protocol
from agent_mesh_learner.protocol import Closed, ProtocolError


class FrameTest(unittest.TestCase):
    def test_frames_round_trip_in_order(self):
        stream = io.BytesIO()
        for payload in [b"", b"abc", bytes(range(256))]:
            protocol.write_frame(stream, payload)
        stream.seek(0)
        self.assertEqual(protocol.read_frame(stream), b"")
        self.assertEqual(protocol.read_frame(stream), b"abc")
        self.assertEqual(protocol.read_frame(stream), bytes(range(256)))
        with self.assertRaises(Closed):
            protocol.read_frame(stream)

    def test_oversized_and_truncated_frames_are_errors(self):
        with self.assertRaisesRegex(ProtocolError, "over the limit"):
            protocol.read_frame(io.BytesIO(struct.pack(">I", 100) + b"x" * 100), limit=10)
        with self.assertRaisesRegex(ProtocolError, "inside a frame"):
            protocol.read_frame(io.BytesIO(struct.pack(">I", 10) + b"abc"))
        with self.assertRaisesRegex(ProtocolError, "header"):
            protocol.read_frame(io.BytesIO(b"\x00\x01"))
        with self.assertRaises(ProtocolError):
            protocol.write_frame(io.BytesIO(), b"x" * 11, limit=10)


class MessageTest(unittest.TestCase):
    def test_messages_carry_kind_fields_and_float32_arrays_in_order(self):
        arrays = {"z": np.ones((2, 2)), "a": np.zeros(3)}
        payload = protocol.encode_message("fit", {"num_examples": 3}, arrays)
        kind, fields, back = protocol.decode_message(payload)
        self.assertEqual(kind, "fit")
        self.assertEqual(fields, {"num_examples": 3})
        self.assertEqual(list(back), ["z", "a"])
        self.assertEqual(back["z"].dtype, np.float32)

    def test_garbage_and_missing_kind_are_protocol_errors(self):
        with self.assertRaises(ProtocolError):
            protocol.decode_message(b"garbage")
        from agent_mesh_learner import safetensors

        with self.assertRaisesRegex(ProtocolError, "no kind"):
            protocol.decode_message(safetensors.encode({}, {"json": "{}"}))

    def test_nan_in_fields_is_refused_when_encoding(self):
        with self.assertRaises(ValueError):
            protocol.encode_message("evaluate", {"loss": float("nan")})


if __name__ == "__main__":
    unittest.main()
