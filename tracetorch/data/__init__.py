"""tracetorch.data (see the module docstrings inside)."""
