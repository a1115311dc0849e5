"""Skip collecting this package's doctests when the optional ``[nir]`` extra is absent."""

import importlib.util

collect_ignore_glob = ["*.py"] if importlib.util.find_spec("nir") is None or importlib.util.find_spec("h5py") is None else []
