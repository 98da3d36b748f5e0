"""A numpy learner for Agent Mesh: softmax regression on MNIST.

The node starts it (``[learner] command = ["python3", "mnist_softmax.py"]``)
and asks it to fit and evaluate. It trains on one shard of the bundled
MNIST subset (``data/mnist-10k``) and evaluates on the test images.

Environment:
  MNIST_DIR       folder with the four IDX gzip files (default: the repository's data/mnist-10k)
  LEARNER_SHARD   "i/n": train on shard i of n (a seeded IID split; default "0/1")
  LEARNER_TEST_ROWS   test images used by evaluate (default: all)
"""

import gzip
import os
import struct
import sys

import numpy as np

import agent_mesh_learner as aml

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIR = os.path.join(HERE, "..", "..", "data", "mnist-10k")
#: Seed of the IID split (every node of a mesh must use the same).
SPLIT_SEED = 0


def read_idx(path):
    """An IDX file (gzip) as a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(folder, prefix):
    images = read_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"))
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return (x - 0.1307) / 0.3081, labels.astype(np.int64)


def shard(n_rows, spec):
    i, n = (int(v) for v in spec.split("/"))
    if not 0 <= i < n:
        raise ValueError(f"LEARNER_SHARD {spec!r}: need 0 <= i < n")
    order = np.random.default_rng(SPLIT_SEED).permutation(n_rows)
    return np.array_split(order, n)[i]


def softmax_loss(w, b, x, y):
    """Mean cross-entropy and the probabilities."""
    logits = x @ w + b
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y] + 1e-12).mean()
    return float(loss), p


class SoftmaxLearner(aml.Learner):
    name = "mnist-softmax-numpy"

    def __init__(self):
        folder = os.environ.get("MNIST_DIR", DEFAULT_DIR)
        x, y = load(folder, "train")
        rows = shard(len(y), os.environ.get("LEARNER_SHARD", "0/1"))
        self.x, self.y = x[rows], y[rows]
        self.x_test, self.y_test = load(folder, "t10k")
        test_rows = int(os.environ.get("LEARNER_TEST_ROWS", len(self.y_test)))
        self.x_test, self.y_test = self.x_test[:test_rows], self.y_test[:test_rows]
        print(f"{self.name}: {len(self.y)} training rows, {len(self.y_test)} test rows", file=sys.stderr)

    def parameters(self):
        # [inputs, outputs], the layout whose He-uniform start the mesh draws.
        return {"fc.weight": np.zeros((784, 10), np.float32), "fc.bias": np.zeros(10, np.float32)}

    def fit(self, parameters, config):
        w = parameters["fc.weight"].astype(np.float64)
        b = parameters["fc.bias"].astype(np.float64)
        w0, b0 = w.copy(), b.copy()
        epochs = int(config.get("epochs", 1))
        batch = int(config.get("batch_size", 32))
        lr = float(config.get("learning_rate", 0.1))
        mu = float(config.get("proximal_mu", 0.0))
        rng = np.random.default_rng(int(config.get("seed", 0)))
        losses = []
        for _ in range(epochs):
            order = rng.permutation(len(self.y))
            for start in range(0, len(order), batch):
                idx = order[start : start + batch]
                xb, yb = self.x[idx], self.y[idx]
                loss, p = softmax_loss(w, b, xb, yb)
                p[np.arange(len(yb)), yb] -= 1.0
                p /= len(yb)
                w -= lr * (xb.T @ p + mu * (w - w0))
                b -= lr * (p.sum(axis=0) + mu * (b - b0))
                losses.append(loss)
        params = {"fc.weight": w.astype(np.float32), "fc.bias": b.astype(np.float32)}
        return params, len(self.y), {"loss": float(np.mean(losses)), "steps": len(losses)}

    def evaluate(self, parameters, config):
        w, b = parameters["fc.weight"], parameters["fc.bias"]
        loss, p = softmax_loss(w, b, self.x_test, self.y_test)
        accuracy = float((p.argmax(axis=1) == self.y_test).mean())
        return loss, len(self.y_test), {"accuracy": accuracy}


if __name__ == "__main__":
    aml.serve(SoftmaxLearner())
