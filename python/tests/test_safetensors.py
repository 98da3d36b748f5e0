"""The pure-numpy safetensors reader and writer."""

import json
import os
import tempfile
import unittest

import numpy as np

from agent_mesh_learner import safetensors as st


class SafetensorsTest(unittest.TestCase):
    def test_round_trip_keeps_values_dtypes_order_and_metadata(self):
        arrays = {
            "z.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
            "a.bias": np.array([1.5, -2.0], dtype=np.float64),
            "steps": np.array([3], dtype=np.int64),
            "mask": np.array([True, False]),
            "scalar": np.array(2.5, dtype=np.float32),
        }
        data = st.encode(arrays, {"kind": "fit"})
        back, meta = st.decode(data)
        self.assertEqual(list(back), list(arrays))
        for name in arrays:
            np.testing.assert_array_equal(back[name], arrays[name])
            self.assertEqual(back[name].dtype, arrays[name].dtype)
        self.assertEqual(meta, {"kind": "fit"})

    def test_header_is_padded_to_eight_bytes(self):
        data = st.encode({"w": np.zeros(3, np.float32)})
        n = int.from_bytes(data[:8], "little")
        self.assertEqual(n % 8, 0)
        json.loads(data[8 : 8 + n])

    def test_decoded_arrays_are_writable(self):
        back, _ = st.decode(st.encode({"w": np.zeros(3, np.float32)}))
        back["w"] += 1.0
        np.testing.assert_array_equal(back["w"], [1, 1, 1])

    def test_files(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.safetensors")
            st.save_file({"w": np.ones((2, 2), np.float32)}, path, {"a": "b"})
            arrays, meta = st.load_file(path)
        np.testing.assert_array_equal(arrays["w"], np.ones((2, 2)))
        self.assertEqual(meta, {"a": "b"})

    def test_bad_documents_raise_clear_errors(self):
        good = st.encode({"w": np.zeros(4, np.float32)})
        cases = {
            "short": b"\x01\x02",
            "header longer than the document": (10**6).to_bytes(8, "little") + b"{}",
            "not json": (4).to_bytes(8, "little") + b"{{{{",
            "truncated data": good[:-1],
            "trailing data": good + b"\x00\x00\x00\x00",
        }
        for what, data in cases.items():
            with self.subTest(what), self.assertRaises(st.SafetensorsError):
                st.decode(data)

    def test_a_shape_that_disagrees_with_the_offsets_names_the_tensor(self):
        header = json.dumps({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()
        header += b" " * (-len(header) % 8)
        data = len(header).to_bytes(8, "little") + header + b"\x00" * 8
        with self.assertRaisesRegex(st.SafetensorsError, "tensor w"):
            st.decode(data)

    def test_unsupported_dtypes_are_refused(self):
        with self.assertRaises(st.SafetensorsError):
            st.encode({"c": np.zeros(2, np.complex64)})


if __name__ == "__main__":
    unittest.main()
