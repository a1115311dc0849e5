"""``tt-export``: write a traceTorch model as a NIR graph (``.nir``, HDF5).

    tt-export --checkpoint RUN/checkpoints/step_N -o model.nir     # a tt-train checkpoint (its config + weights)
    tt-export configs/model/mlp.yaml -o model.nir --approximate    # a model spec (freshly initialised weights)

Exit status 0 when the file is written, 2 on any problem (one ``tt-export: error: ...`` line).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from tracetorch.cli.arguments import add_input_shape
from tracetorch.cli.errors import USER_ERRORS, fail

__all__ = ["main"]


def _model_from_config(model_config: dict[str, Any], input_shape: list[int], num_classes: int | None) -> Any:
    """The model a checkpoint's ``model`` section describes: a ``factory`` (e.g. model=nir), a ``file``, or a spec."""
    import tracetorch
    from tracetorch.data.registry import call_with_checked_kwargs, import_callable

    spec = dict(model_config)
    factory = spec.pop("factory", None)
    if factory:
        kwargs = {**spec, "input_shape": input_shape, "num_classes": num_classes}
        return call_with_checked_kwargs(import_callable(factory), kwargs, f"model factory {factory!r}")
    if spec.get("file"):
        spec = tracetorch.load_spec(spec["file"]).model_dump()
    return tracetorch.build_model({**spec, "input_shape": input_shape})


def _from_checkpoint(directory: str, input_shape: list[int] | None) -> tuple[Any, list[int]]:
    """The model of a checkpoint: its config's model, sized from the config, ``input_shape`` or the dataset; its weights."""
    from tracetorch.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(directory)
    model_config = ckpt.config.get("model")
    if not isinstance(model_config, dict):
        raise ValueError(f"{directory}: the checkpoint's config has no model section")
    num_classes = None
    if input_shape is None and model_config.get("input_shape"):
        input_shape = [int(s) for s in model_config["input_shape"]]
    if input_shape is None:
        from tracetorch.data.datasets import load_dataset

        try:
            splits = load_dataset(dict(ckpt.config.get("data") or {}))
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"cannot load the checkpoint's dataset to size the model ({err}); pass --input-shape") from None
        input_shape, num_classes = list(splits.input_shape), splits.num_classes
    model = _model_from_config(model_config, input_shape, num_classes)
    try:
        model.load_state_dict(ckpt.weights)
    except RuntimeError as err:
        raise ValueError(f"{directory}: the weights do not fit the model its config describes: {err}") from None
    return model, input_shape


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tt-export", description="Export a traceTorch model to NIR (.nir).")
    parser.add_argument("spec", nargs="?", help="a model spec YAML file (or use --checkpoint)")
    parser.add_argument("--checkpoint", help="a tt-train checkpoint directory (run_dir/checkpoints/step_*)")
    parser.add_argument("-o", "--output", required=True, help="the .nir file to write")
    add_input_shape(parser, "the shape of one sample (default: the spec's input_shape, or the checkpoint's dataset)")
    parser.add_argument("--dt", type=float, default=None, help="time step in seconds stored in the graph (default 1e-4)")
    parser.add_argument("--approximate", action="store_true", help="write layers without an exact NIR form as the nearest "
                        "NIR node, tagged so that tracetorch.nir.from_nir rebuilds them exactly")
    args = parser.parse_args(argv)
    if (args.spec is None) == (args.checkpoint is None):
        parser.error("give either a model spec file or --checkpoint DIR")
    try:
        import tracetorch.nir as tnir
    except ImportError as err:
        fail("tt-export", ValueError(str(err)))
    try:
        if args.checkpoint:
            model, shape = _from_checkpoint(args.checkpoint, args.input_shape)
        else:
            import tracetorch

            spec = tracetorch.load_spec(args.spec).model_dump()
            if args.input_shape:
                spec["input_shape"] = args.input_shape
            model = tracetorch.build_model(spec)
            shape = args.input_shape or getattr(model, "input_shape", None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", tnir.NIRResetWarning)
            graph = tnir.to_nir(model, dt=args.dt or tnir.DEFAULT_DT, input_shape=shape, approximate=args.approximate)
        path = tnir.write(graph, args.output)
    except USER_ERRORS as err:  # NIRError and SpecError are ValueErrors
        fail("tt-export", err)
    for note in {str(w.message) for w in caught}:
        print(f"tt-export: note: {note}", file=sys.stderr)
    print(f"wrote {path} ({len(graph.nodes)} nodes, dt={graph.metadata['dt']:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
