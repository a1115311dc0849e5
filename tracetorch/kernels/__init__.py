"""tracetorch.kernels (see the module docstrings inside)."""
