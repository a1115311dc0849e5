"""Fit the cost model of ``tracetorch.kernels.event_linear.linear_plan`` on this machine.

Times the event-driven Linear kernels (``event_linear_forward``, ``event_linear_grad_weight``) and
torch's dense products (``F.linear`` for the output, ``grad_out.t() @ x`` for the weight gradient) on
random spike inputs ``[2000, K]`` with K = 128, 784, 1024, out_features 10, 128 and 512 and 5%, 20%
and 47% ones, every kernel in the same run. Then fits each model by least squares of the relative
error: events ``ones * (a + b * vectors)`` (8-lane vectors of out_features), dense
``rows * K * (a + b * out_features)``, and prints the fitted constants beside those in use, with
how far each model is off (median and worst relative error). Paste the fitted values into
``event_linear.py`` after a kernel change, then check the plan tests.

    python benchmarks/linear_plan_fit.py [--threads 2] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from layer_bench import machine
from torch.nn import functional as F

ROWS = 2000
IN_FEATURES = (128, 784, 1024)
OUT_FEATURES = (10, 128, 512)
DENSITIES = (0.05, 0.2, 0.47)


def median_us(repeats: int, fn: Callable[..., object], *args: object) -> float:
    """The median wall time of ``fn(*args)`` in microseconds, after three warm-up calls."""
    for _ in range(3):
        fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e6


def fit(samples: list[tuple[float, float, float]]) -> tuple[float, float, float, float]:
    """``(a, b, median, worst)``: ``time_ns ~ a * u + b * v`` over samples ``(u, v, time_us)``, by relative error."""
    design = torch.tensor([[u, v] for u, v, _ in samples], dtype=torch.float64)
    target = torch.tensor([t * 1e3 for _, _, t in samples], dtype=torch.float64)
    coef = torch.linalg.lstsq(design / target[:, None], torch.ones_like(target)).solution
    error = ((design @ coef) / target - 1).abs()
    return float(coef[0]), float(coef[1]), float(error.median()), float(error.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from tracetorch.kernels import cpu, event_linear

    ops = cpu.load()
    if ops is None:
        raise SystemExit("the compiled C++ kernels are unavailable here: nothing to fit")
    print(machine())
    events_out, events_grad, dense_out, dense_grad = [], [], [], []
    print(f"{'K':>5} {'N':>4} {'ones':>6}  {'events out':>10} {'dense out':>9}  {'events grad':>11} {'dense grad':>10}  (us)")
    for k in IN_FEATURES:
        for n in OUT_FEATURES:
            for density in DENSITIES:
                x = (torch.rand(ROWS, k) < density).float()
                g, w, b = torch.randn(ROWS, n), torch.randn(n, k), torch.randn(n)
                indptr, indices = ops.binary_rows(x, 1.0)
                ones, vectors = int(indptr[-1]), -(-n // 8)
                times = (median_us(args.repeats, ops.event_linear_forward, indptr, indices, w, b),
                         median_us(args.repeats, F.linear, x, w, b),
                         median_us(args.repeats, ops.event_linear_grad_weight, indptr, indices, g, k),
                         median_us(args.repeats, torch.mm, g.t(), x))
                events_out.append((ones, ones * vectors, times[0]))
                dense_out.append((ROWS * k, ROWS * k * n, times[1]))
                events_grad.append((ones, ones * vectors, times[2]))
                dense_grad.append((ROWS * k, ROWS * k * n, times[3]))
                print(f"{k:5d} {n:4d} {density:6.0%}  {times[0]:10.0f} {times[1]:9.0f}  {times[2]:11.0f} {times[3]:10.0f}")
    print(f"\n{'model':16} {'fitted (ns)':28} {'in use (ns)':46} relative error median / worst")
    for name, samples, in_use in [
        ("events output", events_out, ("EVENT_ONE_NS", "EVENT_VECTOR_NS")),
        ("events grad W", events_grad, ("EVENT_GRAD_ONE_NS", "EVENT_GRAD_VECTOR_NS")),
        ("dense (both)", dense_out + dense_grad, ("DENSE_INPUT_NS", "DENSE_MAC_NS")),
    ]:
        a, b, median, worst = fit(samples)
        used = ", ".join(f"{c} = {getattr(event_linear, c)}" for c in in_use)
        print(f"{name:16} {a:.3f}, {b:.4f}{'':14} {used:46} {median:.2f} / {worst:.2f}")


if __name__ == "__main__":
    main()
