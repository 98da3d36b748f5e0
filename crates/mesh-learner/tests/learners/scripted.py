"""A learner for the driver's tests that behaves as its first argument says.

good           fits by adding 1 to every value; evaluate: loss 0.5, accuracy 0.8
wrong_shape    returns fc.weight transposed
nan            returns a NaN in fc.bias
raise          fit raises ValueError (an error reply; the learner keeps serving)
zero_examples  claims it trained on 0 examples
garbage        answers fit with bytes that are not a frame's payload
oversized      answers fit with a frame header announcing 100 MB
truncated      answers fit with half a frame, then closes the connection and idles
exit_at_once   prints a message and exits with status 3 before connecting
hang           never answers fit
crash          exits (status 7) in the middle of fit
crash_once     like crash on its first fit (it leaves a marker file in $MARKER_DIR), good after
print_stdout   prints to stdout before and during serving, otherwise good
"""

import os
import socket
import struct
import sys
import time

import numpy as np

import agent_mesh_learner as aml
from agent_mesh_learner import protocol
from agent_mesh_learner.serving import handle

MODE = sys.argv[1]


class Scripted(aml.Learner):
    name = f"scripted-{MODE}"

    def parameters(self):
        return {"fc.weight": np.zeros((3, 2), np.float32), "fc.bias": np.zeros(2, np.float32)}

    def fit(self, parameters, config):
        out = {k: v + 1.0 for k, v in parameters.items()}
        if MODE == "print_stdout":
            print("fitting with", config)
        if MODE == "wrong_shape":
            out["fc.weight"] = out["fc.weight"].T
        if MODE == "nan":
            out["fc.bias"][1] = np.nan
        if MODE == "raise":
            raise ValueError("the data loader found no files")
        if MODE == "hang":
            time.sleep(3600)
        if MODE == "crash":
            os._exit(7)
        if MODE == "crash_once":
            marker = os.path.join(os.environ["MARKER_DIR"], "crashed")
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(7)
        examples = 0 if MODE == "zero_examples" else 10
        return out, examples, {"loss": 1.25, "steps": 4}

    def evaluate(self, parameters, config):
        return 0.5, 20, {"accuracy": 0.8}


def serve_broken(learner):
    """Serves normally until the first fit, then breaks the framing as MODE says."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ["AGENT_MESH_LEARNER_SOCKET"])
    stream = sock.makefile("rwb")
    while True:
        payload = protocol.read_frame(stream)
        kind, _, _ = protocol.decode_message(payload)
        if kind != "fit":
            reply = handle(learner, payload)
            if reply is None:
                return
            protocol.write_frame(stream, reply)
            continue
        if MODE == "garbage":
            protocol.write_frame(stream, b"this is not safetensors")
        elif MODE == "oversized":
            stream.write(struct.pack(">I", 100_000_000) + b"\0" * 1024)
            stream.flush()
        elif MODE == "truncated":
            stream.write(struct.pack(">I", 1000) + b"\0" * 10)
            stream.flush()
            sock.shutdown(socket.SHUT_WR)
        time.sleep(3600)


if __name__ == "__main__":
    if MODE == "exit_at_once":
        print("scripted learner: cannot find the training data", file=sys.stderr)
        sys.exit(3)
    if MODE == "print_stdout":
        print("loading data (stdout)")
    if MODE in ("garbage", "oversized", "truncated"):
        serve_broken(Scripted())
    else:
        aml.serve(Scripted())
