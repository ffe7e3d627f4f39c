"""Router gate weights: seeded init, fixed GrAP, or loaded from a captured model's router.

A loaded router weight is a ``.safetensors`` or ``.pt`` file holding one tensor per MoE layer,
[E, d] (torch ``nn.Linear`` layout, what the activations capture writes as
``router_weight.layer{L}`` in a capture folder's ``router.safetensors``; the folder itself may be
given) or [d, E]. ``{layer}`` is the MoE layer index of the batch being routed. Loading problems are ConfigErrors naming the weight file,
the tensor and the bad value.
"""

from __future__ import annotations

from pathlib import Path

import torch

from etr_sim.errors import ConfigError, problem


def load_gate(file: str, tensor: str, layer: int, hidden_size: int, num_experts: int) -> torch.Tensor:
    """Read the router weight of ``layer`` and return it as [d, E] float32.

    Args: file path, tensor name ('{layer}' replaced by ``layer``), the expected d and E.
    """
    path, name = Path(file), tensor.replace("{layer}", str(layer))
    if path.is_dir():  # a capture folder: its router weights live in router.safetensors
        path = path / "router.safetensors"
    if not path.is_file():
        raise ConfigError(file, problem("", "router weight file not found"))
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                names = list(f.keys())
                if name not in names:
                    raise ConfigError(file, problem(name, f"no such tensor; the file has {sorted(names)[:12]}"))
                w = f.get_tensor(name)
        else:
            blob = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(blob, torch.Tensor):
                w = blob
            elif isinstance(blob, dict) and name in blob:
                w = blob[name]
            else:
                names = sorted(blob) if isinstance(blob, dict) else []
                raise ConfigError(file, problem(name, f"no such tensor; the file has {names[:12]}"))
    except ConfigError:
        raise
    except Exception as exc:  # corrupt or unreadable file
        raise ConfigError(file, problem("", f"cannot read router weights: {exc}")) from None
    shape = tuple(w.shape)
    if shape == (num_experts, hidden_size):
        return w.float().T.contiguous()
    if shape == (hidden_size, num_experts):
        return w.float().contiguous()
    raise ConfigError(
        file,
        problem(name, f"expected shape [E, d] = [{num_experts}, {hidden_size}] or [d, E]", list(shape)),
    )
