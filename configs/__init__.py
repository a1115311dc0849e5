"""Hydra configs shipped with traceTorch (installed as ``tracetorch.configs``).

Importing this package (Hydra does, to find the configs) registers ``tt_defaults``: every
default of :class:`tracetorch.training.config.TrainConfig`, the base that ``train.yaml``
and the group files (which hold only what a choice changes) are merged onto.
"""

from hydra.core.config_store import ConfigStore

from tracetorch.training.config import schema_defaults

ConfigStore.instance().store(name="tt_defaults", node=schema_defaults())
