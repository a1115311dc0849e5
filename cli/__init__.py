"""Command-line entry points (installed as ``tracetorch.cli``); each stays thin and calls the library."""
