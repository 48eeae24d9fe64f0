"""undiffuse: diffusion models on PyTorch — exact math, fast samplers, honest evaluation."""

__version__ = "0.1.0"
