"""The speech use case: keyword-spotting data, features, partitions, models and training.

Nothing here knows about Flower, Optuna, Ray or MLflow.

This is the package's face: the rest of sweeper imports from `sweeper.kws`, not from its
modules. The registries (`MODELS`, `SUMMARIES`) are plain names -> "module:attr" so that
torch-free code (the leverage catalogue in `sweeper.config`) can read them; every other name
is imported from its module on first use (torch takes seconds to import). Training goes
through `TrainSettings(...).fit` (the function `train` shares its module's name, which a
package attribute cannot carry).
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> "module:factory"; a factory is `(num_classes, width) -> torch.nn.Module` whose
# layers have `features` (to the embedding) and `head` (the linear classifier)
MODELS: dict[str, str] = {
    "cnn_small": "sweeper.kws.models:small_cnn",
    "ds_cnn_s": "sweeper.kws.models:ds_cnn_s",
    "ds_cnn_m": "sweeper.kws.models:ds_cnn_m",
    "ds_cnn_l": "sweeper.kws.models:ds_cnn_l",
}
# name -> "module:function"; `(model, x, y, k, seed) -> sorted indices of k examples`
SUMMARIES: dict[str, str] = {
    "random": "sweeper.kws.summarize:random_subset",
    "loss": "sweeper.kws.summarize:highest_loss",
    "coreset": "sweeper.kws.summarize:coreset",
}

_LAZY = {  # face name -> its module
    "TrainSettings": "sweeper.kws.train",
    "evaluate": "sweeper.kws.train",
    "select": "sweeper.kws.summarize",
    "build_model": "sweeper.kws.models",
    "compute_threads": "sweeper.kws.task",
    "flops_per_example_of": "sweeper.kws.task",
    "model_info": "sweeper.kws.task",
    "new_model": "sweeper.kws.task",
    "reusable_model": "sweeper.kws.task",
    "trial_data": "sweeper.kws.task",
    "client_partitions": "sweeper.kws.dataset",
    "client_split": "sweeper.kws.dataset",
    "dataset_root": "sweeper.kws.dataset",
    "partition_stats": "sweeper.kws.dataset",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MODELS", "SUMMARIES", *_LAZY]
