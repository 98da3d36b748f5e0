"""The serve loop, over a real socket pair."""

import socket
import threading
import unittest

import numpy as np

import agent_mesh_learner as aml
from agent_mesh_learner import protocol
from agent_mesh_learner.serving import handle, serve_stream


class Doubler(aml.Learner):
    name = "doubler"

    def parameters(self):
        return {"w": np.ones((2, 2), np.float32), "b": np.zeros(2, np.float32)}

    def fit(self, parameters, config):
        if config.get("fail"):
            raise RuntimeError("asked to fail")
        return {k: v * 2 for k, v in parameters.items()}, 7, {"loss": np.float32(0.5)}

    def evaluate(self, parameters, config):
        return 0.25, 3, {"accuracy": 0.75, "nan": float("nan")}


class ServeTest(unittest.TestCase):
    def setUp(self):
        self.node, learner_side = socket.socketpair()
        stream = learner_side.makefile("rwb")
        self.thread = threading.Thread(target=serve_stream, args=(Doubler(), stream))
        self.thread.start()
        self.io = self.node.makefile("rwb")
        self.addCleanup(self.close, learner_side, stream)

    def close(self, learner_side, stream):
        self.io.close()
        self.node.close()
        self.thread.join(timeout=10)
        stream.close()
        learner_side.close()

    def call(self, kind, fields=None, arrays=None):
        protocol.write_frame(self.io, protocol.encode_message(kind, fields, arrays))
        return protocol.decode_message(protocol.read_frame(self.io))

    def test_hello_layout_fit_evaluate_then_shutdown(self):
        kind, fields, _ = self.call("hello", {"protocol_version": 1})
        self.assertEqual((kind, fields["learner_name"], fields["protocol_version"]), ("hello", "doubler", 1))
        kind, _, arrays = self.call("layout")
        self.assertEqual([(k, v.shape) for k, v in arrays.items()], [("w", (2, 2)), ("b", (2,))])
        kind, fields, arrays = self.call("fit", {"config": {"epochs": 1}}, {"w": np.ones((2, 2)), "b": np.ones(2)})
        self.assertEqual((kind, fields["num_examples"], fields["metrics"]), ("fit", 7, {"loss": 0.5}))
        np.testing.assert_array_equal(arrays["w"], np.full((2, 2), 2.0))
        kind, fields, _ = self.call("evaluate", {"config": {}}, arrays)
        self.assertEqual((kind, fields["loss"], fields["metrics"]), ("evaluate", 0.25, {"accuracy": 0.75, "nan": None}))
        protocol.write_frame(self.io, protocol.encode_message("shutdown"))
        self.thread.join(timeout=10)
        self.assertFalse(self.thread.is_alive())

    def test_an_exception_is_an_error_reply_and_the_learner_keeps_serving(self):
        kind, fields, _ = self.call("fit", {"config": {"fail": True}}, {"w": np.ones((2, 2))})
        self.assertEqual(kind, "error")
        self.assertIn("RuntimeError: asked to fail", fields["message"])
        kind, _, _ = self.call("evaluate", {"config": {}}, {"w": np.ones((2, 2))})
        self.assertEqual(kind, "evaluate")

    def test_an_unknown_kind_is_an_error_reply(self):
        kind, fields, _ = self.call("train")
        self.assertEqual(kind, "error")
        self.assertIn("train", fields["message"])


class NotImplementedTest(unittest.TestCase):
    def test_the_base_class_says_what_is_missing(self):
        reply = handle(aml.Learner(), protocol.encode_message("layout"))
        kind, fields, _ = protocol.decode_message(reply)
        self.assertEqual(kind, "error")
        self.assertIn("parameters()", fields["message"])


if __name__ == "__main__":
    unittest.main()
