"""Optimizer state as tensors: saved in safetensors (nothing pickled) with its param_groups in JSON."""

from __future__ import annotations

from typing import Any, Mapping, Union

import torch

__all__ = ["optimizer_tensors", "load_optimizer_tensors"]


def optimizer_tensors(optimizers: Mapping[str, torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizers' state as flat tensors ``NAME.PARAM_INDEX.KEY`` (for safetensors, nothing pickled) and
    their param_groups (for JSON)."""
    tensors, groups = {}, {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        for idx, st in sd["state"].items():
            for key, v in st.items():
                tensors[f"{name}.{idx}.{key}"] = torch.as_tensor(v).detach().cpu().contiguous()
        groups[name] = sd["param_groups"]
    return tensors, groups


def load_optimizer_tensors(optimizers: Mapping[str, torch.optim.Optimizer], tensors: Mapping[str, torch.Tensor],
                           groups: Mapping[str, Any], device: Union[str, torch.device] = "cpu") -> None:  # fmt: skip
    """Load what :func:`optimizer_tensors` saved (moments to ``device``; the step counters stay on the CPU)."""
    for name, opt in optimizers.items():
        state: dict = {}
        for k, v in tensors.items():
            head, idx, key = k.split(".", 2)
            if head == name:
                state.setdefault(int(idx), {})[key] = v if key == "step" else v.to(device)
        opt.load_state_dict({"state": state, "param_groups": groups[name]})
