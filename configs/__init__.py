"""Hydra configs shipped with traceTorch (installed as ``tracetorch.configs``)."""
