"""The tutorials' reading order (sphinx-gallery sorts files alphabetically otherwise)."""

from __future__ import annotations

ORDER = (
    "plot_encoding.py",
    "plot_first_layer.py",
    "plot_train_classifier.py",
    "plot_tt_train.py",
    "plot_scaling_out.py",
    "plot_recurrent_clicks.py",
    "plot_online_traces.py",
    "plot_reflect.py",
    "plot_custom_layer.py",
    "plot_nir.py",
)


class TutorialOrder:
    """A sphinx-gallery sort key: the files in :data:`ORDER` first, in that order, then the rest by name."""

    def __init__(self, src_dir: str) -> None:
        self.src_dir = src_dir

    def __call__(self, filename: str) -> tuple[int, str]:
        return (ORDER.index(filename) if filename in ORDER else len(ORDER), filename)

    def __repr__(self) -> str:
        return f"TutorialOrder({ORDER})"
