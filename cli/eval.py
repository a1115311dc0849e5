"""``tt-eval RUN_OR_CHECKPOINT [key=value ...]``: evaluate a checkpoint written by ``tt-train``.

Give a checkpoint folder (``run/checkpoints/step_*``) or a run folder (its latest
checkpoint; ``--best``: the one with the best test accuracy). The checkpoint's own config
rebuilds the dataset and the model; ``key=value`` overrides change it (e.g.
``data.root=/data trainer.device=cpu``). Nothing in a checkpoint's config is imported or
interpolated (see the README's trust model).
"""

from __future__ import annotations

import argparse
import json

from tracetorch.cli.errors import USER_ERRORS, fail, interrupted

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tt-eval", description="Evaluate a tt-train checkpoint on its dataset.")
    parser.add_argument("checkpoint", help="a run dir (its latest checkpoint) or a checkpoint dir (run_dir/checkpoints/step_*)")
    parser.add_argument("overrides", nargs="*", help="config overrides as key=value, e.g. data.root=/data")
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--best", action="store_true", help="with a run dir: the checkpoint with the best test accuracy")
    args = parser.parse_args(argv)
    try:
        _evaluate(parser, args)
    except KeyboardInterrupt:
        interrupted("tt-eval")


def _is_episodic(where: str) -> bool:
    """Whether a run dir or checkpoint comes from ``trainer.learning=reflect`` (greedy episodes, not a test split)."""
    from tracetorch.training.checkpoint import load_checkpoint
    from tracetorch.training.resume import find_checkpoint

    try:
        trainer = load_checkpoint(find_checkpoint(where)).config.get("trainer") or {}
    except ValueError:
        return False  # evaluate_checkpoint reports the problem
    return trainer.get("learning") == "reflect"


def _evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from tracetorch.training import evaluate_checkpoint
    from tracetorch.training.progress import summary_table

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"overrides must be key=value, got {' '.join(bad)}")
    try:
        if _is_episodic(args.checkpoint):
            from tracetorch.training.episodes import evaluate_episodes

            result = evaluate_episodes(args.checkpoint)
            result = {k: v for k, v in result.items() if not isinstance(v, list)}
        else:
            result = evaluate_checkpoint(args.checkpoint, args.overrides, split=args.split, best=args.best)
    except USER_ERRORS as err:
        fail("tt-eval", err)
    if args.json:
        print(json.dumps(result))
    else:
        from tracetorch.training.progress import make_console

        make_console().print(summary_table(result, title=f"Evaluation ({args.split})"))


if __name__ == "__main__":
    main()
