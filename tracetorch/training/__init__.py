"""tracetorch.training (see the module docstrings inside)."""
