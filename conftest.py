"""Doctests of optional extras are collected only when the extra is installed."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("gymnasium") else ["tracetorch/rl/*.py"]
