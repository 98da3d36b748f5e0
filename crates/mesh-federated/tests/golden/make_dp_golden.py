#!/usr/bin/env python3
"""Generates golden (q, z, steps, delta) -> epsilon points for the RDP accountant.

The reference is Google's `dp-accounting` RdpAccountant (PyPI package `dp-accounting`),
composing a Poisson-subsampled Gaussian mechanism `steps` times with its default orders.

    pip install dp-accounting==0.6.0
    python3 crates/mesh-federated/tests/golden/make_dp_golden.py \
        > crates/mesh-federated/tests/golden/dp_rdp.json
"""

import importlib.metadata
import json
import sys

import dp_accounting
from dp_accounting.rdp import rdp_privacy_accountant as rdp

# (sampling rate q, noise multiplier z, steps, delta): q = 1 and q < 1, few and many
# steps, small and large noise, several deltas.
POINTS = [
    (1.0, 1.0, 1, 1e-5),
    (1.0, 1.1, 100, 1e-5),
    (1.0, 5.0, 10, 1e-6),
    (1.0, 20.0, 1000, 1e-5),
    (0.01, 1.1, 1, 1e-5),
    (0.01, 1.1, 100, 1e-5),
    (0.01, 1.1, 10000, 1e-5),
    (0.01, 0.7, 1000, 1e-5),
    (0.001, 4.0, 100000, 1e-6),
    (0.1, 0.8, 50, 1e-3),
    (0.1, 2.0, 500, 1e-5),
    (0.3, 1.5, 200, 1e-5),
    (0.5, 3.0, 20, 1e-4),
    (0.02, 10.0, 5000, 1e-7),
    (0.004, 1.0, 250000, 1e-5),
    (0.99, 2.0, 7, 1e-5),
]


def epsilon(q: float, z: float, steps: int, delta: float) -> float:
    accountant = rdp.RdpAccountant()
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), steps
    )
    accountant.compose(event)
    return accountant.get_epsilon(delta)


def main() -> None:
    points = [
        {"q": q, "z": z, "steps": steps, "delta": delta, "epsilon": epsilon(q, z, steps, delta)}
        for (q, z, steps, delta) in POINTS
    ]
    doc = {
        "source": f"dp-accounting {importlib.metadata.version('dp-accounting')} RdpAccountant, default orders",
        "points": points,
    }
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
