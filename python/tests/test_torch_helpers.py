"""The torch helpers (skipped when torch is not installed)."""

import unittest

import numpy as np

import agent_mesh_learner as aml

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None


@unittest.skipIf(torch is None, "torch is not installed")
class TorchHelpersTest(unittest.TestCase):
    def test_state_dict_round_trip(self):
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
        arrays = aml.state_dict_to_arrays(model.state_dict())
        self.assertNotIn("1.num_batches_tracked", arrays)
        self.assertEqual(arrays["0.weight"].shape, (3, 4))
        self.assertEqual(arrays["0.weight"].dtype, np.float32)
        arrays = {k: v + 1 for k, v in arrays.items()}
        model.load_state_dict(aml.arrays_to_state_dict(arrays, model.state_dict()), strict=False)
        np.testing.assert_allclose(model[0].weight.detach().numpy(), arrays["0.weight"])

    def test_trainable_only_and_bad_shapes(self):
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
        arrays = aml.state_dict_to_arrays(model.state_dict(), trainable_only_of=model)
        self.assertNotIn("1.running_mean", arrays)
        with self.assertRaises(ValueError):
            aml.arrays_to_state_dict({"0.bias": np.zeros(5)}, model.state_dict())
        with self.assertRaises(KeyError):
            aml.arrays_to_state_dict({"head.bias": np.zeros(5)}, model.state_dict())


if __name__ == "__main__":
    unittest.main()
