"""Bring your own training code to an Agent Mesh node.

A learner is a process the node starts (``[learner] command = [...]`` in the
node's config). It only trains and evaluates; the node keeps selection,
model fetch, clipping, DP noise, secure aggregation, signing and aggregation.

    import agent_mesh_learner as aml

    class MyLearner(aml.Learner):
        def parameters(self):
            return {"fc.weight": w, "fc.bias": b}

        def fit(self, parameters, config):
            ...
            return new_parameters, num_examples, {"loss": loss}

        def evaluate(self, parameters, config):
            ...
            return loss, num_examples, {"accuracy": accuracy}

    if __name__ == "__main__":
        aml.serve(MyLearner())

Parameters are ordered dicts of name -> float32 numpy array, in the job's
layout order. The protocol is described in docs/learner.md of the repository.
"""

from .learner import Learner
from .protocol import PROTOCOL_VERSION, ProtocolError
from .serving import serve
from .torch_helpers import arrays_to_state_dict, state_dict_to_arrays

__all__ = [
    "Learner",
    "PROTOCOL_VERSION",
    "ProtocolError",
    "arrays_to_state_dict",
    "serve",
    "state_dict_to_arrays",
]
