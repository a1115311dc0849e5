"""tracetorch.builder (see the module docstrings inside)."""
