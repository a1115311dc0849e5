"""
The same from a YAML file with ``tt-train``
===========================================

``tt-train`` runs the training loop of :doc:`plot_train_classifier` from configuration
files: a model file (YAML), and config groups changed on the command line. This tutorial
writes a model file, runs one training, then a sweep over two learning rates that ends
with a ``summary.csv``. The runs here are kept to one short epoch; drop the
``trainer.*`` limits for real ones.
"""

import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
from tracetorch.cli.validate import main as validate

work = Path(tempfile.mkdtemp(prefix="tt-train-tutorial-"))

# %%
# A model file
# ------------
# A list of one-key mappings from a layer name to its keywords. Sizes are inferred from
# ``input_shape`` (the digits are ``[1, 8, 8]``); ``tt-validate`` checks a file.
# Saved as ``<dir>/model/tiny.yaml``, it becomes a choice of the ``model`` group once the
# directory is on Hydra's search path.

(work / "configs" / "model").mkdir(parents=True)
model_file = work / "configs" / "model" / "tiny.yaml"
model_file.write_text("""\
# A small spiking MLP for the 8x8 digits.
name: tiny
input_shape: [1, 8, 8]
layers:
  - Flatten: {}
  - Linear: {out_features: 64}
  - LIB: {beta: 0.9, quant_fn: round_ste}
  - Linear: {out_features: 10}
  - LI: {beta: 0.9}
""")
assert validate([str(model_file)]) == 0  # tt-validate, called in-process


def tt_train(*overrides: str) -> str:
    """Run tt-train (the installed console script's module) and return what it printed."""
    args = [sys.executable, "-m", "tracetorch.cli.train", *overrides, "trainer.progress=false"]
    result = subprocess.run(args, capture_output=True, text=True, cwd=work)
    if result.returncode != 0:
        raise RuntimeError(f"tt-train exited with {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


# %%
# One run
# -------
# Overrides pick files of a group (``model=tiny``, ``encoder=latency``) or set any key
# (``trainer.epochs=1``). The run dir is Hydra's ``hydra.run.dir``.

search_path = f"hydra.searchpath=[file://{work / 'configs'}]"
print(tt_train(search_path, "model=tiny", "trainer.epochs=2", "trainer.limit_train_batches=10", f"hydra.run.dir={work / 'run'}"))
print(sorted(p.name for p in (work / "run").iterdir()))
last = json.loads((work / "run" / "metrics.jsonl").read_text().splitlines()[-1])
print({k: last[k] for k in ("epoch", "test_accuracy", "spike_rate") if k in last})

# %%
# The run's ``curves.png``:

fig, ax = plt.subplots(figsize=(8, 4))
ax.imshow(plt.imread(work / "run" / "curves.png"))
ax.axis("off")

# %%
# A sweep
# -------
# ``-m`` runs every combination of comma-separated values, one run dir each, and writes
# ``summary.csv`` in the sweep dir (best and final test accuracy, speed, status per run).

print(tt_train("-m", search_path, "model=tiny", "trainer.epochs=1", "trainer.limit_train_batches=10",
               "optim.lr=1e-3,1e-2", f"hydra.sweep.dir={work / 'sweep'}").splitlines()[-1])
with open(work / "sweep" / "summary.csv") as f:
    rows = list(csv.DictReader(f))
for row in rows:
    print(f"{row['params']:16s} best test accuracy {float(row['best_test_accuracy']):.3f}  status {row['status']}")
assert len(rows) == 2 and all(row["status"] == "ok" for row in rows)

# %%
# Every key and group is listed in the :doc:`configuration reference </reference/training-config>`;
# ``trainer.resume=auto`` continues a run and ``tt-eval <checkpoint>`` evaluates one
# (:doc:`command-line reference </reference/cli>`).
