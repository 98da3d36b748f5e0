"""The learner base class: what the node calls and what it expects back."""

from typing import Any, Dict, Mapping, Tuple

import numpy as np

Arrays = Dict[str, np.ndarray]
Config = Dict[str, Any]
Metrics = Dict[str, Any]


class Learner:
    """Subclass and override ``fit`` and ``evaluate`` (and ``parameters`` so
    that ``agent-mesh learner layout`` can print the job's layout).

    The node calls one method at a time, from one thread.
    """

    #: The name the learner gives in its hello (shown in the node's log).
    name = "learner"

    def describe(self) -> Dict[str, Any]:
        """Facts about the learner for the handshake; ``name`` is used."""
        return {"name": self.name}

    def parameters(self) -> Mapping[str, np.ndarray]:
        """The learner's own (initial) parameters, in layout order: their
        names and shapes are the job's layout."""
        raise NotImplementedError(
            "this learner does not implement parameters(); give the job's layout by hand"
        )

    def fit(self, parameters: Arrays, config: Config) -> Tuple[Mapping[str, np.ndarray], int, Metrics]:
        """Trains from ``parameters`` on local data.

        ``config`` holds the job's ``epochs``, ``batch_size``,
        ``learning_rate``, ``proximal_mu`` and ``seed``. Returns the trained
        parameters (same names and shapes), the number of examples trained on
        (the update's weight), and metrics (a ``loss`` entry is logged).
        """
        raise NotImplementedError("fit")

    def evaluate(self, parameters: Arrays, config: Config) -> Tuple[float, int, Metrics]:
        """Evaluates ``parameters`` on local held-out data: returns the mean
        loss, the number of examples, and metrics (``accuracy`` in [0, 1] is
        what the node reports for a round)."""
        raise NotImplementedError("evaluate")
