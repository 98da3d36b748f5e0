"""A PyTorch learner for Agent Mesh: a small MLP on MNIST.

The node starts it (``[learner] command = ["python3", "mnist_mlp.py"]``);
the model's state_dict goes to and from the node's flat named arrays with
``agent_mesh_learner.state_dict_to_arrays`` / ``arrays_to_state_dict``.

Environment: MNIST_DIR, LEARNER_SHARD, LEARNER_TEST_ROWS as in the numpy
example (it reuses that example's IDX reader and split).
"""

import os
import sys

import numpy as np
import torch
from torch import nn

import agent_mesh_learner as aml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python-learner-numpy"))
from mnist_softmax import DEFAULT_DIR, load, shard  # noqa: E402


class MlpLearner(aml.Learner):
    name = "mnist-mlp-torch"

    def __init__(self):
        torch.set_num_threads(1)
        folder = os.environ.get("MNIST_DIR", DEFAULT_DIR)
        x, y = load(folder, "train")
        rows = shard(len(y), os.environ.get("LEARNER_SHARD", "0/1"))
        self.x, self.y = torch.from_numpy(x[rows]), torch.from_numpy(y[rows])
        x_test, y_test = load(folder, "t10k")
        test_rows = int(os.environ.get("LEARNER_TEST_ROWS", len(y_test)))
        self.x_test, self.y_test = torch.from_numpy(x_test[:test_rows]), torch.from_numpy(y_test[:test_rows])
        self.model = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))

    def parameters(self):
        return aml.state_dict_to_arrays(self.model.state_dict())

    def _load(self, parameters):
        state = aml.arrays_to_state_dict(parameters, self.model.state_dict())
        self.model.load_state_dict(state, strict=True)

    def fit(self, parameters, config):
        self._load(parameters)
        torch.manual_seed(int(config.get("seed", 0)))
        optimizer = torch.optim.SGD(self.model.parameters(), lr=float(config.get("learning_rate", 0.05)))
        batch = int(config.get("batch_size", 32))
        losses = []
        self.model.train()
        for _ in range(int(config.get("epochs", 1))):
            order = torch.randperm(len(self.y))
            for start in range(0, len(order), batch):
                idx = order[start : start + batch]
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(self.model(self.x[idx]), self.y[idx])
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
        return self.parameters(), len(self.y), {"loss": float(np.mean(losses)), "steps": len(losses)}

    def evaluate(self, parameters, config):
        self._load(parameters)
        self.model.eval()
        with torch.no_grad():
            logits = self.model(self.x_test)
            loss = nn.functional.cross_entropy(logits, self.y_test).item()
            accuracy = (logits.argmax(dim=1) == self.y_test).float().mean().item()
        return loss, len(self.y_test), {"accuracy": accuracy}


if __name__ == "__main__":
    aml.serve(MlpLearner())
