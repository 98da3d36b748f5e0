"""Going between a ``torch.nn.Module`` state_dict and the flat named arrays
of the protocol. torch is imported only when these are called, so the
package needs numpy alone."""

from typing import Any, Dict, Mapping

import numpy as np


def state_dict_to_arrays(state_dict: Mapping[str, Any], trainable_only_of: Any = None) -> Dict[str, np.ndarray]:
    """float32 numpy copies of a state_dict's floating-point tensors, in its order.

    Integer buffers (BatchNorm's ``num_batches_tracked``) are left out: they
    are not parameters to average. Pass ``trainable_only_of=model`` to keep
    only ``model.named_parameters()`` (no buffers at all).
    """
    import torch  # noqa: F401  (imported lazily on purpose)

    keep = None
    if trainable_only_of is not None:
        keep = {name for name, _ in trainable_only_of.named_parameters()}
    out: Dict[str, np.ndarray] = {}
    for name, tensor in state_dict.items():
        if keep is not None and name not in keep:
            continue
        if not tensor.is_floating_point():
            continue
        out[name] = tensor.detach().to("cpu").float().numpy().copy()
    return out


def arrays_to_state_dict(arrays: Mapping[str, np.ndarray], reference: Mapping[str, Any]) -> Dict[str, Any]:
    """Tensors for ``model.load_state_dict(..., strict=False)``: each array
    becomes a tensor with the dtype and device of the same entry of
    ``reference`` (usually ``model.state_dict()``); an array whose name or
    shape is not in ``reference`` raises ``KeyError`` / ``ValueError``."""
    import torch

    out: Dict[str, Any] = {}
    for name, array in arrays.items():
        if name not in reference:
            raise KeyError(f"parameter {name} is not in the model's state_dict")
        ref = reference[name]
        if tuple(ref.shape) != tuple(np.shape(array)):
            raise ValueError(f"parameter {name} has shape {tuple(np.shape(array))}, the model has {tuple(ref.shape)}")
        out[name] = torch.as_tensor(np.asarray(array)).to(dtype=ref.dtype, device=ref.device)
    return out
