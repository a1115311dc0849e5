"""Validating specs without allocating them: time and resident memory of ``build_model(spec, device="meta")``.

Each spec runs in a fresh subprocess: the "import" columns are what ``import tracetorch`` and
one small warm-up validation cost (PyTorch loads its meta kernels on first use); the
"validate" columns are the spec's own validation after that: wall time and growth of the
resident set. ``--real`` adds building the 30,000 x 30,000 Linear for real (about 3.6 GB).

    python benchmarks/validate_bench.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

SPECS = {
    "Linear 30,000 x 30,000 (chain)": {"input_shape": [30000], "layers": [{"Linear": {"out_features": 30000}}, {"LIB": {}}]},
    "1.07e9 parameters (graph)": {"input_shape": [32768], "output": "out", "nodes": {
        "fc": {"Linear": {"out_features": 32768}}, "lif": {"LIB": {}}, "out": {"add": {}, "from": ["lif", "input"]}}},
    "Linear 4 x 4e9 (80 GB)": {"input_shape": [4], "layers": [{"Linear": {"out_features": 4_000_000_000}}]},
    "sew_resnet18.yaml": "configs/model/sew_resnet18.yaml",
}

CHILD = r"""
import json, os, sys, time
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
start, base = time.perf_counter(), rss()
import tracetorch as tt
tt.build_model({"input_shape": [4], "layers": [{"Linear": {"out_features": 2}}, {"LIB": {}}]}, device="meta")
imported, before = time.perf_counter() - start, rss()
spec, device = json.loads(sys.argv[1]), sys.argv[2]
start = time.perf_counter()
model = tt.build_model(spec, device=device)
seconds = time.perf_counter() - start
print(json.dumps({"import_s": imported, "import_mb": (before - base) / 2**20, "validate_s": seconds,
                  "validate_mb": (rss() - before) / 2**20, "parameters": sum(p.numel() for p in model.parameters())}))
"""


def measure(spec: object, device: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec), device], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="also build the 30,000 x 30,000 Linear on the CPU")
    args = parser.parse_args()
    rows = [(name, "meta", spec) for name, spec in SPECS.items()]
    if args.real:
        rows.append(("Linear 30,000 x 30,000 (chain)", "cpu", SPECS["Linear 30,000 x 30,000 (chain)"]))
    print(f"{'spec':34} {'device':6} {'parameters':>15} {'import s':>9} {'import MB':>10} {'validate s':>11} {'validate MB':>12}")
    for name, device, spec in rows:
        r = measure(spec, device)
        print(f"{name:34} {device:6} {r['parameters']:>15,} {r['import_s']:>9.2f} {r['import_mb']:>10.1f} "
              f"{r['validate_s']:>11.3f} {r['validate_mb']:>12.1f}")


if __name__ == "__main__":
    main()
