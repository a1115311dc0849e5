"""Sphinx configuration of the traceTorch documentation.

Build: ``pip install -e ".[docs]"`` then ``sphinx-build -W --keep-going -b html docs docs/_build/html``
(or ``make -C docs html``). ``TT_DOCS_FAST=1`` runs only the fastest tutorials and a
shorter first run (what the test suite builds); the reference pages are always generated
from the code (``docs/_ext/tt_reference.py``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
os.environ.setdefault("TRACETORCH_KERNELS", "reference")  # no C++ build during a docs build
os.environ.setdefault("MPLBACKEND", "Agg")
FAST = os.environ.get("TT_DOCS_FAST", "") not in ("", "0")

import tracetorch  # noqa: E402

project = "traceTorch"
author = "traceTorch developers"
copyright = "traceTorch developers"  # noqa: A001
release = version = tracetorch.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # the docstrings' Args: / Returns: / Example: sections
    "tt_prose_attributes",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "sphinx_copybutton",
    "tt_reference",
    "tt_first_run",
    "tt_xref",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_generated", "tutorials/*.rst", "auto_tutorials/*.ipynb", "auto_tutorials/*.py",
                    "auto_tutorials/*.zip", "auto_tutorials/*.json", "auto_tutorials/*.md5"]
root_doc = "index"

# ---- strictness: every cross-reference must resolve (-W turns warnings into errors) ----
nitpicky = True
nitpick_ignore_regex = [
    # third-party types: no intersphinx (the build runs offline), so they stay plain text
    (r"py:.*", r"(torch|nn|numpy|np|pydantic|omegaconf|hydra|typing|collections|pathlib|matplotlib|rich|optuna)(\..*)?"),
    (r"py:.*", r"(Tensor|Module|Parameter|DictConfig|BaseModel|Path|Any|Callable|Iterator|Sequence|Mapping|Literal)"),
    (r"py:.*", r"(Generator|Optimizer|LRScheduler|Dataset|DataLoader|Callback|NamedTuple|Enum|FnKind|device|dtype)"),
    (r"py:class", r"(optional|default .*|callable|ndarray|array-like)"),
    (r"py:.*", r"(int|float|str|bool|dict|list|tuple|set|type|object|None|bytes|Exception|ValueError|TypeError)"),
    (r"py:.*", r"(KeyError|FileNotFoundError|OSError|RuntimeError|NoReturn|Self|TracebackType|PathLike|os\..*)"),
    (r"py:.*", r"(annotated_types|types|pydantic_core)\..*|FieldInfo|NoneType|Gt|Ge|Lt|Le|MinLen|MaxLen"),  # Pydantic fields
    (r"py:.*", r"(inspect|yaml|safetensors|sklearn|contextlib|nir|nirtorch|gymnasium|tonic|h5py|argparse)\..*"),
    (r"py:class", r"Int|Float|Source|Device|list\[.*|tuple\[.*"),  # annotation aliases, split annotations
    (r"py:attr", r"observation_space|action_space|np_random\w*"),  # gymnasium.Env attributes
    (r"py:class", r"dict\[str|Strict\w+|PositiveInt|Number|LayerSpec|RegisteredLayer"),  # schema aliases, split annotations
    (r"py:class", r"tracetorch\..*\._\w+"),  # private base classes shown by show-inheritance
    (r"py:data", r"[A-Z][A-Z0-9_]*"),  # module constants (autodoc documents only those with a doc comment)
]

# ---- API reference ----
autosummary_generate = True
autosummary_ignore_module_all = True  # every object is documented once, in the module that defines it;
autosummary_imported_members = False  # re-exports (tracetorch.Model) link there through tt_xref
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True, "undoc-members": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_inherit_docstrings = False  # third-party docstrings (gymnasium, torch) are not ours to check
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_class_signature = "mixed"
autodoc_mock_imports = [] if importlib.util.find_spec("triton") else ["triton"]  # the CUDA kernels' module
add_module_names = False

# ---- Markdown ----
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# ---- tutorials: Python scripts run at build time ----
FAST_TUTORIALS = r"(plot_encoding|plot_first_layer)\.py"
sphinx_gallery_conf = {
    "examples_dirs": "tutorials",
    "gallery_dirs": "auto_tutorials",
    "filename_pattern": FAST_TUTORIALS if FAST else r"/plot_",
    "ignore_pattern": r"__init__\.py|/_",
    "within_subsection_order": "tt_gallery.TutorialOrder",
    "abort_on_example_error": True,
    "download_all_examples": False,
    "remove_config_comments": True,
    "min_reported_time": 1e9,
    "show_memory": False,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "capture_repr": ("_repr_html_", "__repr__"),
    "plot_gallery": "True",
}

# ---- HTML ----
rst_prolog = """
.. |event| replace:: \\|event\\|
"""  # tracetorch.training.plots.plot_raster's docstring writes |event| for an absolute value
html_theme = "furo"
html_title = f"traceTorch {release}"
html_static_path = ["_static"]
html_css_files = ["tracetorch.css"]
html_show_sourcelink = False
pygments_style = "friendly"
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
if os.environ.get("TT_DOCS_MATHJAX"):  # a local MathJax for offline viewing, e.g. Debian's libjs-mathjax
    mathjax_path = os.environ["TT_DOCS_MATHJAX"]
