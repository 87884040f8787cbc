"""The training loop: SGD with momentum on a named model and dataset, writing a run folder.

``train(config) -> dict`` runs one training job and returns the final metrics (the content of
``metrics.json``); ``evaluate(checkpoint) -> dict`` measures a saved network's test error, with
Monte Carlo draws for stochastic networks. The run folder holds ``config.json``,
``metrics.jsonl`` (one line per finished epoch), ``last.pt``/``best.pt`` (atomic checkpoints)
and ``metrics.json`` (written at the end).

Efficiency: the data live on the device (:mod:`sdenet.train.data`); loss and accuracy are
summed on the device and read once per epoch (and every ``progress_every`` steps when the
progress bar is shown). On CUDA the forward pass runs under bf16 autocast with channels-last
tensors, optionally through ``torch.compile``.

Several processes: started by ``torchrun`` (environment ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``), each process trains a DistributedDataParallel replica on its share of every
batch (backend nccl on CUDA, gloo on CPU); rank 0 alone writes the run folder.

Exactness: a run stopped after epoch k and resumed with ``resume=RUN_DIR`` ends with the same
weights as an uninterrupted run: the checkpoint holds the model, optimizer and scheduler
states, the global torch RNG states, the network noise generator's state (of every rank), and
the data loader needs only ``(seed, epoch)``.

Test hook: the environment variable ``SDENET_FAULT`` injects faults — ``nan@E`` makes the
loss NaN throughout epoch E, ``testnan@E`` makes epoch E's test loss NaN, ``interrupt@E`` /
``interrupt@E:S`` raises KeyboardInterrupt at step S (default 0) of epoch E, ``kill@E:S`` sends
the process SIGKILL at step S of epoch E, ``killsave@E`` sends it SIGKILL between the
``last.pt`` and ``best.pt`` writes of epoch E.

Crashes: the run folder is locked (:class:`~sdenet.train.runfolder.RunLock`) while a run uses
it; a run that stops before its first checkpoint leaves ``config.json``, from which
``resume`` starts it over (and a new run may take the folder over, saying so); ``best.pt`` is
written after ``last.pt`` and the best epoch is always read from ``best.pt`` itself (repaired
from ``last.pt`` on resume when a kill fell between the two writes). A NaN or infinite train or
test loss, or a training loss above :data:`DIVERGENCE_FACTOR` times the run's first one, stops
the run (:class:`TrainingDiverged`) before that epoch is written anywhere.

The code lives in one module per concern; this module gathers their names (the import path
``sdenet.train.loop`` keeps working):

- :mod:`sdenet.train.config`: :class:`TrainConfig`, its validation and resolution;
- :mod:`sdenet.train.distributed`: the device, the ``torchrun`` processes, derived seeds;
- :mod:`sdenet.train.usermodel`: building a registered or a user's ``module:factory`` network;
- :mod:`sdenet.train.datasource`: the arrays or image folder a run reads;
- :mod:`sdenet.train.evaluation`: test sums, Monte Carlo prediction, :func:`evaluate`;
- :mod:`sdenet.train.trainsetup` and :mod:`sdenet.train.trainer`: :func:`train`, its set-up
  and its step loop;
- :mod:`sdenet.train.faults`: the ``SDENET_FAULT`` hook;
- :mod:`sdenet.train.jsonio`: the JSON files of a run folder.
"""

from __future__ import annotations

from .config import (  # noqa: F401 - re-exported
    DIVERGENCE_FACTOR,
    MAX_EPOCHS,
    MAX_MC_SAMPLES,
    RUN_FILES,
    TrainConfig,
    TrainingDiverged,
    _check_user_spec,
    _dataset_tag,
    _default_run_dir,
    _git_commit,
    _known_models,
    _number,
    _positive_int,
    _random_depth,
    _resolve,
    _version,
    is_user_model,
)
from .datasource import _agreed_data_root, _image_folder_loaders, _load_data, is_image_folder  # noqa: F401 - re-exported
from .distributed import _Dist, _seed, resolve_device  # noqa: F401 - re-exported
from .evaluation import (  # noqa: F401 - re-exported
    ABSURD_WEIGHT,
    _binomial_se,
    _check_finite_weights,
    _check_fits,
    _check_sane_loss,
    _checkpoint_error,
    _depth_context,
    _eval_precision,
    _eval_sums,
    _mc_predict_fn,
    _mc_sums,
    evaluate,
)
from .faults import _fault  # noqa: F401 - re-exported
from .jsonio import _jsonable, _read_lines, _write_json  # noqa: F401 - re-exported
from .monitor import DEFAULT_WEAK_K, WeakConditionError  # noqa: F401 - re-exported
from .trainer import _depth_of_step, _lm_coefficients, _loss_fn, _Trainer, train  # noqa: F401 - re-exported
from .trainsetup import _ROUNDOFF, _check_random_depth, _check_step_precision, _TrainerSetup, _weak_report  # noqa: F401 - re-exported
from .usermodel import (  # noqa: F401 - re-exported
    _create_model,
    _create_model_check,
    _create_user_model,
    _first_line,
    _is_stochastic,
    _model_known,
    _set_generator,
    _where_failed,
)

__all__ = [
    "TrainConfig",
    "train",
    "evaluate",
    "TrainingDiverged",
    "WeakConditionError",
    "resolve_device",
    "RUN_FILES",
    "MAX_EPOCHS",
    "MAX_MC_SAMPLES",
    "DIVERGENCE_FACTOR",
]
