"""The set-up of a training run (:class:`_TrainerSetup`, the first half of
:class:`sdenet.train.trainer._Trainer`): the run folder and its lock, resuming from ``last.pt``
(or from ``config.json`` of a run that stopped before its first checkpoint), the data, the
network (warm start, dilation), its checks (the data fit it, its step is above working
precision, random depth can coarsen it), the optimizer and schedule, the restored states, and
the DDP / ``torch.compile`` wrappers."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from . import checkpoint as ck
from . import usermodel
from .config import TrainConfig, _default_run_dir, _resolve, is_user_model
from .datasource import _agreed_data_root, _image_folder_loaders, _load_data, is_image_folder
from .distributed import _Dist, _seed
from .evaluation import _check_fits, _checkpoint_error
from .monitor import WeakConditionError, model_weak_report, violations, warning_message
from .presets import lr_factor
from .runfolder import RunLock, check_out_dir, make_run_dir
from .usermodel import _create_model_check, _first_line, _is_stochastic, _model_known, _set_generator

#: float32's unit roundoff: a step whose update dt * f is below it relative to the state is lost
_ROUNDOFF = 2.0**-24


def _check_step_precision(model, rc: dict, log) -> None:
    """Warn (refuse under ``strict_weak``) when a stage's step is so small that ``x + dt f(x)``
    rounds to ``x`` at working precision (float32's unit roundoff, for ``|f| ~ |x|``): the stage
    is then the identity and its blocks learn nothing."""
    dts = []
    for m in model.modules():
        dt = getattr(m, "dt", None)
        if isinstance(dt, (int, float)) and not isinstance(dt, bool) and dt > 0 and hasattr(m, "steps"):
            dts.append(float(dt))
    if not dts:
        return
    eps = _ROUNDOFF
    small = min(dts)
    if small >= eps:
        return
    msg = (
        f"a stage steps with dt = {small:.3g}, below float32's resolution {eps:.3g}: x + dt f(x) "
        f"rounds to x, so the stage is the identity at working precision; use a larger dt or "
        f"fewer refinements"
    )
    if rc.get("strict_weak"):
        raise ValueError(msg + " (--strict-weak)")
    log(f"sdenet: warning: {msg}", err=True)


def _check_random_depth(model, factors) -> None:
    """Refuse a coarsening factor that coarsens no stage of ``model``."""
    from ..nn.depth import _stages, parse_depth_factor

    steps = [s.steps for _, s in _stages(model)]
    if not steps:
        raise ValueError("random_depth: the model has no sdenet Stage to run at another depth")
    for f in factors:
        k = parse_depth_factor(f).denominator
        if k > 1 and not any(n % k == 0 for n in steps):
            raise ValueError(
                f"random_depth: factor {f} coarsens no stage of the model (steps per "
                f"stage {steps}, none a multiple of {k}); refine the model first, "
                f"e.g. overrides refine=2"
            )


def _weak_report(model) -> list[dict]:
    return model_weak_report(model)


class _TrainerSetup:
    """Set-up, resume and checkpoint writing of a run; :class:`~sdenet.train.trainer._Trainer`
    adds the epochs."""

    def __init__(self, cfg: TrainConfig, device: torch.device, dist: _Dist, callback):
        self.cfg, self.device, self.dist, self.callback = cfg, device, dist, callback
        self.quiet = bool(cfg.quiet)
        self.main = dist.main
        self.lock: RunLock | None = None
        self.created_dir = False
        self.run_dir: Path = None  # type: ignore[assignment]  # set first thing in _setup
        self.loss_ref: float | None = None
        self.image_shape: tuple[int, ...] | None = None

    def log(self, msg: str, err: bool = False):
        if self.main:
            print(msg, file=sys.stderr if err else sys.stdout, flush=True)

    # -- set-up ---------------------------------------------------------------------------
    def _lock(self, run_dir: Path, created: bool = False):
        """Take the run folder's lock (rank 0). Stale temporaries are removed only once set-up
        has succeeded (:meth:`_run`): a refused command removes nothing."""
        if not self.main:
            return
        self.lock = RunLock(run_dir).acquire()
        self.created_dir = created  # removed again if set-up fails (never another run's folder)

    def _resume_source(self, cfg: TrainConfig):
        """``(run_dir, checkpoint or None, config)`` of ``cfg.resume``, under the folder's lock."""
        target = Path(str(cfg.resume))
        if not target.exists():
            raise ValueError(f"{target}: no such run folder to resume (it should hold last.pt)")
        run_dir = target if target.is_dir() else target.parent
        path = run_dir / "last.pt" if target.is_dir() else target
        self._lock(run_dir)
        if path.is_file():
            ckpt = ck.load_checkpoint(path)
            ck.validate_checkpoint(ckpt, path, resume=True, known_model=_model_known)
            return run_dir, ckpt, dict(ckpt["config"])
        cfg_path = run_dir / "config.json"
        if target.is_dir() and cfg_path.is_file() and not (run_dir / "best.pt").exists():
            # stopped before its first checkpoint (killed, diverged or failed in epoch 1)
            try:
                from .safe_io import read_json

                rc = read_json(cfg_path)
                ck.validate_checkpoint(
                    {"format": ck.FORMAT, "epoch": 1, "config": rc, "model": {"-": torch.zeros(0)}},
                    cfg_path,
                    known_model=_model_known,
                )
            except (OSError, ValueError) as e:
                raise ValueError(f"{cfg_path}: cannot continue the run from it: {_first_line(e)}") from None
            for key, ok in ck._CONFIG_NEEDS.items():
                if key not in rc or not ok(rc[key]):
                    raise ValueError(
                        f"{cfg_path}: config entry {key!r} is missing or malformed ({rc.get(key)!r})"
                    )
            if not isinstance(rc.get("weak_K"), (int, float, str)) or isinstance(rc.get("weak_K"), bool):
                rc["weak_K"] = "law"
            self.log(
                f"sdenet: {run_dir} stopped before its first checkpoint; starting the run "
                f"over from epoch 1 with its config.json",
                err=True,
            )
            return run_dir, None, rc
        raise ValueError(f"{path}: checkpoint file is missing")

    def _setup(self):
        cfg, device, dist = self.cfg, self.device, self.dist
        self.ckpt = None
        if cfg.resume:
            run_dir, self.ckpt, rc = self._resume_source(cfg)
            where = run_dir / "last.pt" if self.ckpt is not None else run_dir / "config.json"
            if is_user_model(rc["model"]) or is_user_model(cfg.model):
                if cfg.model != rc["model"]:
                    raise ValueError(
                        f"{where}: the run trains the user model {rc['model']!r}; "
                        f"importing it runs its code, so name it yourself with "
                        f"--model {rc['model']}"
                        if is_user_model(rc["model"])
                        else f"{where}: the run trains {rc['model']!r}, not {cfg.model!r}"
                    )
            elif cfg.model != TrainConfig.model and cfg.model != rc["model"]:
                raise ValueError(f"{where}: the run trains {rc['model']!r}, not {cfg.model!r}")
            if torch.device(rc.get("device", "cpu")).type != device.type:
                cuda = device.type == "cuda"  # the defaults of the device it now runs on
                rc["amp"], rc["channels_last"] = cuda, cuda
            rc["device"] = str(device)
            if rc.get("world_size", 1) != dist.world_size:
                self.log(
                    f"sdenet: warning: resuming a {rc.get('world_size', 1)}-process run with "
                    f"{dist.world_size} process(es): the network noise of the other ranks "
                    f"is reseeded, so the result will not match an uninterrupted run",
                    err=True,
                )
            rc["world_size"] = dist.world_size
            rc.setdefault("amp", device.type == "cuda")
            rc.setdefault("channels_last", device.type == "cuda")
            rc.setdefault("label_smoothing", 0.0)
            rc.setdefault("nesterov", False)
            rc.setdefault("warmup", 0)
            rc.setdefault("strict_weak", False)
            rc.setdefault("weak_K", "law")
            rc.setdefault("compile", False)
            rc.setdefault("mc_samples", 0)
            rc.setdefault("random_depth", None)
            rc.setdefault("schedule_window", None)
            self.run_dir = run_dir
            if self.ckpt is not None and self.ckpt["epoch"] >= rc["epochs"]:
                if (run_dir / "metrics.json").exists() or not isinstance(self.ckpt.get("metrics"), dict):
                    raise ValueError(
                        f"{run_dir}: the run already finished its {rc['epochs']} epochs; nothing to resume"
                    )
                # stopped after its last checkpoint, before metrics.json: finish it
                self.log(
                    f"sdenet: {run_dir} trained all {rc['epochs']} epochs but stopped before "
                    f"writing metrics.json; finishing it",
                    err=True,
                )
        else:
            rc = _resolve(cfg, device, dist.world_size)
            self.run_dir = check_out_dir(
                cfg.out if cfg.out is not None else _default_run_dir(rc["model"], rc["dataset"]),
                live=self.main,
            )
            created = make_run_dir(self.run_dir) if self.main else False
            self._lock(self.run_dir, created)
            if (self.run_dir / "last.pt").exists() or (self.run_dir / "best.pt").exists():
                raise ValueError(
                    f"{self.run_dir}: already holds a run; use --resume {self.run_dir} "
                    f"to continue it or choose another --out"
                )
            if (self.run_dir / "config.json").exists() or (self.run_dir / "metrics.jsonl").exists():
                self.log(
                    f"sdenet: {self.run_dir} holds a run that stopped before its first "
                    f"checkpoint; this run takes the folder over",
                    err=True,
                )
        rc["run_dir"] = str(self.run_dir)
        if rc.get("deterministic"):  # before any generator is seeded or the model is built
            from ..provenance import set_deterministic

            set_deterministic(rc["seed"], threads=torch.get_num_threads())
        from ..provenance import provenance

        rc["provenance"] = provenance(rc["seed"], rc.get("command"), device, dist.world_size)
        self.rc = rc
        amp = rc["amp"]
        if amp and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            amp = rc["amp"] = False
        self.amp = amp

        # batch_size is the global batch of one optimizer step, split over the processes
        if rc["batch_size"] % dist.world_size:
            raise ValueError(
                f"batch size {rc['batch_size']} does not split over "
                f"{dist.world_size} processes; use a multiple of {dist.world_size}"
            )
        loader_kw = dict(
            batch_size=rc["batch_size"] // dist.world_size,
            device=device,
            seed=rc["seed"],
            channels_last=rc["channels_last"],
            rank=dist.rank,
            world_size=dist.world_size,
            eval_batch_size=rc.get("eval_batch_size"),
        )
        native = None  # the data's image height (arrays only)
        if is_image_folder(rc["dataset"]):
            if rc.get("resolution") is not None:
                raise ValueError(
                    f"{rc['dataset']}: resolution applies to CIFAR-style arrays, not to image folders"
                )
            self.train_loader, self.test_loader = _image_folder_loaders(
                rc["dataset"], limit_train=rc.get("limit_train"), limit_test=rc.get("limit_test"), **loader_kw
            )
            num_classes = self.train_loader.num_classes
            rc["dataset_source"] = f"ImageFolder {rc['dataset']}"
            rc["n_train"] = len(self.train_loader.dataset)
            rc["n_test"] = len(self.test_loader.dataset)
        else:
            root = _agreed_data_root(rc, cfg.data_root, self.run_dir) if cfg.resume else cfg.data_root
            ds = _load_data(
                rc["dataset"],
                root=root,
                download=cfg.download,
                limit_train=rc.get("limit_train"),
                limit_test=rc.get("limit_test"),
            )
            num_classes = ds.num_classes
            rc["dataset_source"] = ds.source
            rc["n_train"], rc["n_test"] = len(ds.x_train), len(ds.x_test)
            self.image_shape = tuple(int(v) for v in ds.x_train.shape[1:])  # H, W, C
            from .loaders import make_loaders

            self.train_loader, self.test_loader = make_loaders(
                ds, resolution=rc.get("resolution"), **loader_kw
            )
            native = ds.image_shape[1]
            if rc.get("resolution") is None:
                rc["resolution"] = native
        if rc.get("num_classes") not in (None, num_classes):
            raise ValueError(
                f"{rc['dataset']}: {num_classes} classes, but the checkpoint was "
                f"trained on {rc['num_classes']}"
            )
        rc["num_classes"] = num_classes

        torch.manual_seed(rc["seed"])
        n_train = rc.get("n_train") or rc["batch_size"]
        model = usermodel._create_model(
            rc["model"],
            num_classes,
            dict(rc["model_overrides"]),
            where=str(self.run_dir / "config.json") if cfg.resume else "train",
            batch=min(rc["batch_size"], n_train) // dist.world_size,
            image=rc.get("resolution"),
            device=device,
        )
        if self.ckpt is None and rc.get("init"):  # warm start (sdenet.train.multiscale)
            from .multiscale import init_weights

            self.init_ckpt = ck.load_checkpoint(rc["init"])  # read once: weights here, momentum below
            ck.validate_checkpoint(self.init_ckpt, rc["init"], known_model=_model_known, min_epoch=0)
            ic = self.init_ckpt["config"]  # its stored config, checked as data
            _create_model_check(
                ic["model"], ic.get("num_classes"), ic.get("model_overrides") or {}, str(rc["init"])
            )
            rc.update(
                init_weights(
                    model,
                    self.init_ckpt,
                    rc["init"],
                    resolution=rc["resolution"],
                    native=native,
                    rescale=bool(rc.get("init_rescale")),
                    method=rc.get("init_rescale_method") or "atrous",
                )
            )
        elif rc.get("dilation", 1) != 1:  # a resumed run of a network refined a trous
            from .multiscale import apply_dilation, checkpoint_dilation

            apply_dilation(model, checkpoint_dilation(rc))
        model = model.to(device)
        if rc["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.params = sum(p.numel() for p in model.parameters())
        self.noise = torch.Generator(device=device)
        self.noise.manual_seed(_seed(rc["seed"], dist.rank, 7))
        if getattr(self, "image_shape", None) is not None:
            _check_fits(model, self.image_shape, num_classes, rc, device, self.noise)
        _set_generator(model, self.noise)
        self.stochastic = _is_stochastic(model)
        _check_step_precision(model, rc, self.log)
        if rc.get("dt") is None:
            mdt = (
                (getattr(model, "config", None) or {}).get("dt", getattr(model, "dt", None))
                if isinstance(getattr(model, "config", None), dict)
                else getattr(model, "dt", None)
            )
            if isinstance(mdt, (int, float)):  # the stages' step: the model's dt over its refine factor
                rc["dt"] = float(mdt) / float((getattr(model, "config", None) or {}).get("refine", 1) or 1)
            else:
                dts = sorted({d["dt"] for d in _weak_report(model) if d.get("dt") is not None})
                rc["dt"] = dts[0] if len(dts) == 1 else (dts or None)
        rc["params"] = self.params
        if rc.get("random_depth"):
            _check_random_depth(model, rc["random_depth"])

        self.optimizer = torch.optim.SGD(
            model.parameters(),
            lr=rc["lr"],
            momentum=rc["momentum"],
            weight_decay=rc["weight_decay"],
            nesterov=bool(rc["nesterov"]) and rc["momentum"] > 0,
        )
        spe = len(self.train_loader)
        self.steps_per_epoch = spe
        shift = 0.5 if rc["schedule"] == "onecycle" else 0.0
        window = rc.get("schedule_window")  # checked when resolved (or by the checkpoint's checks)
        offset, span = (0, rc["epochs"]) if not window else (int(window[0]), int(window[1]))
        sched = dict(
            schedule=rc["schedule"],
            epochs=span,
            milestones=rc["milestones"],
            gamma=rc["gamma"],
            warmup=rc["warmup"],
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: lr_factor(offset + (k + shift) / spe, **sched)
        )

        self.start_epoch, self.best, self.best_epoch, self.elapsed0 = 0, float("inf"), 0, 0.0
        if self.ckpt is None and rc.get("init"):
            self._init_from(self.init_ckpt, rc["init"])
        if self.ckpt is not None:
            c = self.ckpt
            path = self.run_dir / "last.pt"
            ck.check_model_state(model, c["model"], path, repr(rc["model"]))
            ck.check_optimizer_state(self.optimizer, c["optimizer"], path)
            try:
                model.load_state_dict(c["model"])
                self.optimizer.load_state_dict(c["optimizer"])
                self.scheduler.load_state_dict(c["scheduler"])
            except (RuntimeError, ValueError, KeyError, TypeError) as e:
                raise ValueError(
                    f"{path}: its state does not load into the run ({type(e).__name__}: {_first_line(e)})"
                ) from None
            self.start_epoch = int(c["epoch"])
            self.best, self.best_epoch = self._best_on_resume(c)
            self.elapsed0 = float(c.get("elapsed", 0.0))
            ref = c.get("loss_ref")
            self.loss_ref = (
                float(ref)
                if isinstance(ref, (int, float)) and math.isfinite(ref) and ref > 0
                else math.log(max(num_classes, 2))
            )
            rng = dict(c["rng"])
            noise_ranks = rng.get("noise_ranks")
            if noise_ranks and len(noise_ranks) == dist.world_size:
                rng["noise"] = noise_ranks[dist.rank]
            elif dist.rank != 0:
                rng["noise"] = None
                self.noise.manual_seed(_seed(rc["seed"], dist.rank, 7, self.start_epoch))
            saved_on = torch.device(self.ckpt["config"].get("device", "cpu")).type
            if saved_on != device.type:  # a CUDA generator state does not fit a CPU generator
                self.log(
                    f"sdenet: warning: resuming a {saved_on} run on {device.type}: the "
                    f"network noise is reseeded, so the result will not match an "
                    f"uninterrupted run",
                    err=True,
                )
                rng["noise"] = None
                self.noise.manual_seed(_seed(rc["seed"], dist.rank, 7, self.start_epoch))
            try:
                ck.set_rng_state(rng, self.noise)
            except (RuntimeError, ValueError, TypeError) as e:
                raise ValueError(
                    f"{self.run_dir / 'last.pt'}: its RNG state does not fit ({_first_line(e)})"
                ) from None

        # wrappers: DDP for several processes, torch.compile on request
        self.fwd_train = self.fwd_eval = model
        if dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # a stochastic network with batch noise skips dropped blocks: their parameters get
            # no gradient in that step (and on that rank only), which DDP must be told about
            mcfg = getattr(model, "config", None)
            mode = mcfg.get("mode") if isinstance(mcfg, dict) else None
            unused = self.stochastic and (mode is None or mode == "batch")
            unused = unused or bool(rc.get("random_depth"))  # coarsened: every other block idle
            self.fwd_train = DDP(
                model,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=unused,
            )
        if rc["compile"]:
            self.fwd_train = torch.compile(self.fwd_train)
            self.fwd_eval = self.fwd_train if dist.world_size == 1 else model

    def _init_from(self, init: dict, path):
        """SGD momentum by parameter name from the warm-start checkpoint ``init`` read from
        ``path`` (multilevel training's cycles carry it). The weights themselves were loaded,
        and rescaled if asked, by :func:`sdenet.train.multiscale.init_weights` when the model
        was built."""
        momentum = init.get("momentum") or {}
        if not isinstance(momentum, dict):
            raise ValueError(f"{path}: its 'momentum' entry is not a dict of tensors")
        if momentum and self.rc["momentum"] > 0:
            for name, p in self.model.named_parameters():
                buf = momentum.get(name)
                if buf is None:
                    continue
                if not isinstance(buf, torch.Tensor) or tuple(buf.shape) != tuple(p.shape):
                    raise ValueError(f"{path}: its momentum of {name} does not fit the model")
                self.optimizer.state[p]["momentum_buffer"] = buf.to(p.device, p.dtype).clone()

    def _best_on_resume(self, c: dict) -> tuple[float, int]:
        """``(best test error, its epoch)`` from ``best.pt`` itself. When a kill fell between the
        ``last.pt`` and ``best.pt`` writes of an improving epoch, ``best.pt`` is repaired first
        from ``last.pt`` (which records that it was the best)."""
        best_path = self.run_dir / "best.pt"
        epoch = int(c["epoch"])
        b = None
        if best_path.is_file():
            b = ck.load_checkpoint(best_path)
            ck.validate_checkpoint(b, best_path, known_model=_model_known)
        if c.get("best_epoch") == epoch and (b is None or b["epoch"] != epoch) and self.main:
            self.log(
                f"sdenet: {best_path} did not hold epoch {epoch}, the best so far (a write "
                f"was interrupted); writing it from last.pt",
                err=True,
            )
            self._save(c, best_path)
            b = c
        if b is None:
            return float("inf"), 0
        return _checkpoint_error(b), int(b["epoch"])

    def _save(self, state: dict, path: Path) -> None:
        try:
            ck.save_atomic(state, path)
        except OSError as e:
            raise ValueError(f"{path}: cannot write the checkpoint ({e.strerror or e})") from None

    # -- condition (5) --------------------------------------------------------------------
    def _check_weak(self, report, warned: set):
        rc = self.rc
        bad = violations(report, rc["weak_K"])
        if not bad:
            return
        msg = warning_message(bad, rc["weak_K"])
        if rc["strict_weak"]:
            raise WeakConditionError(msg + " (--strict-weak)")
        if msg not in warned:
            warned.add(msg)
            self.log(f"sdenet: warning: {msg}", err=True)
