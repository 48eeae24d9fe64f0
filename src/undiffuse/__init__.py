"""undiffuse: diffusion models on PyTorch — exact math, fast samplers, honest evaluation."""

__version__ = "0.1.0"

__all__ = ["load", "__version__"]


def __getattr__(name: str):
    # ``undiffuse.load`` (= :func:`undiffuse.api.load`) is imported lazily, so that importing a math
    # subpackage (``undiffuse.schedules``, …) does not pull in training, safetensors or the networks.
    if name == "load":
        from undiffuse.api import load

        return load
    raise AttributeError(f"module 'undiffuse' has no attribute {name!r}")
