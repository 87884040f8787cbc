"""The training step loop: :func:`train` and :class:`_Trainer` (its epochs, the divergence
checks, the checkpoints of every epoch and the final metrics). The set-up is
:class:`sdenet.train.trainsetup._TrainerSetup`'s; fault injection is read once per epoch
(:func:`sdenet.train.faults.epoch_faults`) and checked once per step."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from . import checkpoint as ck
from .config import DIVERGENCE_FACTOR, TrainConfig, TrainingDiverged
from .distributed import _Dist, _seed, resolve_device
from .evaluation import _checkpoint_error, _eval_sums, _mc_sums
from .faults import epoch_faults
from .hardware import describe
from .jsonio import _jsonable, _read_lines, _write_json
from .monitor import format_table, reduce_report, reset_model_weak_stats
from .runfolder import remove_stale_temporaries
from .trainsetup import _TrainerSetup, _weak_report

__all__ = ["train"]


def _loss_fn(out, y, label_smoothing):
    return F.cross_entropy(out.float(), y, label_smoothing=label_smoothing)


def _lm_coefficients(model) -> dict:
    fn = getattr(model, "lm_coefficients", None)
    if fn is None:
        return {}
    out = {}
    for k, v in (fn() or {}).items():
        if isinstance(v, torch.Tensor):
            v = v.detach().float().cpu().reshape(-1).tolist()
        out[str(k)] = [float(x) for x in v]
    return out


def _depth_of_step(rc: dict, step: int):
    """The depth factor of global training step ``step`` (a function of the seed and the step,
    so an interrupted run draws the same on resume)."""
    factors = rc.get("random_depth")
    if not factors:
        return 1
    return factors[_seed(rc["seed"], 19, step) % len(factors)]


def train(config: TrainConfig | dict | None = None, /, *, callback=None, **kwargs) -> dict:
    """Train a network; return the final metrics (the content of ``metrics.json`` plus
    ``run_dir``).

    ``config`` is a :class:`TrainConfig`, a dict of its fields, or None with the fields as
    keyword arguments (keywords override the config's fields). ``callback(info)`` is called on
    every rank after each epoch's checkpoint with ``info = {"epoch", "metrics", "model",
    "run_dir", "rank"}``.

    Raises ValueError for bad settings (unknown model, missing dataset file, bad numbers),
    :class:`WeakConditionError` (a ValueError) when ``strict_weak`` is set and a stochastic
    stage's K exceeds ``weak_K``, :class:`TrainingDiverged` when the loss turns NaN.
    KeyboardInterrupt leaves ``last.pt`` of the last finished epoch.
    """
    if config is None:
        cfg = TrainConfig.from_dict(kwargs)
    elif isinstance(config, TrainConfig):
        cfg = replace(config, **kwargs) if kwargs else config
    elif isinstance(config, dict):
        cfg = TrainConfig.from_dict({**config, **kwargs})
    else:
        raise ValueError(f"train() takes a TrainConfig or a dict, got {type(config).__name__}")
    dist = _Dist()
    device = resolve_device(cfg.device, dist.local_rank)
    dist.init(device)
    try:
        return _Trainer(cfg, device, dist, callback).run()
    finally:
        dist.close()


class _Trainer(_TrainerSetup):
    """One training run: :meth:`run` sets it up (:class:`_TrainerSetup`), trains its epochs and
    writes its final metrics."""

    # -- the run --------------------------------------------------------------------------
    def run(self) -> dict:
        try:
            return self._run()
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None
            if self.created_dir and self.run_dir is not None:
                try:  # a folder this run created and left empty (it failed in set-up)
                    self.run_dir.rmdir()
                except OSError:
                    pass

    def _run(self) -> dict:
        self._setup()
        rc, dist, device = self.rc, self.dist, self.device
        warned: set = set()
        if self.stochastic:
            self._check_weak(_weak_report(self.model), warned)

        metrics_path = self.run_dir / "metrics.jsonl"
        if self.main:
            gone = remove_stale_temporaries(self.run_dir)
            if gone:
                self.log(
                    f"sdenet: removed {len(gone)} temporary file(s) an interrupted write left "
                    f"in {self.run_dir}: {', '.join(gone)}",
                    err=True,
                )
            self.run_dir.mkdir(parents=True, exist_ok=True)
            from .safe_io import write_text_atomic

            if self.ckpt is None:
                _write_json(self.run_dir / "config.json", rc)
                write_text_atomic(metrics_path, "")
            else:  # drop lines of epochs the checkpoint does not hold
                keep = []
                if metrics_path.is_file() and not metrics_path.is_symlink():
                    for line in _read_lines(metrics_path):
                        try:
                            if json.loads(line)["epoch"] <= self.start_epoch:
                                keep.append(line)
                        except (ValueError, KeyError, TypeError):
                            continue
                write_text_atomic(metrics_path, "".join(k + "\n" for k in keep))
        self.log(
            f"run {self.run_dir}: {rc['model']} ({self.params:,} parameters) on "
            f"{rc['dataset']} ({rc['n_train']} train / {rc['n_test']} test), "
            f"{rc['epochs']} epochs, preset {rc['preset']}, device {device}"
            + (f" x {dist.world_size}" if dist.world_size > 1 else "")
            + (f", resuming after epoch {self.start_epoch}" if self.ckpt is not None else "")
        )

        t_start = time.perf_counter()
        epoch = self.start_epoch
        last = None
        if self.ckpt is not None and self.start_epoch >= rc["epochs"]:
            last = dict(self.ckpt["metrics"])  # only the final evaluation and metrics.json left
        try:
            for epoch in range(self.start_epoch + 1, rc["epochs"] + 1):
                last = self._epoch(epoch, t_start, warned)
        except KeyboardInterrupt:
            done = epoch - 1
            where = (
                (f"{self.run_dir / 'last.pt'} holds epoch {done}; continue with --resume {self.run_dir}")
                if done > 0
                else (f"no checkpoint was written yet; --resume {self.run_dir} starts it over")
            )
            self.log(f"sdenet: interrupted in epoch {epoch}: {where}", err=True)
            raise
        return self._finish(last, t_start)

    def _epoch(self, epoch: int, t_start: float, warned: set) -> dict:
        rc, dist, device, model = self.rc, self.dist, self.device, self.model
        t0 = time.perf_counter()
        c0 = time.process_time()  # CPU time of this process: the load-independent cost of the epoch
        model.train()
        if self.stochastic:
            reset_model_weak_stats(model)
        self.train_loader.set_epoch(epoch - 1)
        lr = self.optimizer.param_groups[0]["lr"]
        faults = epoch_faults(epoch)  # SDENET_FAULT, read once per epoch
        step_fault = faults.step
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        count = 0
        bar = None
        show = self.main and not self.quiet and sys.stderr.isatty()
        if show:
            try:
                from tqdm import tqdm

                bar = tqdm(
                    total=len(self.train_loader),
                    desc=f"epoch {epoch}/{rc['epochs']}",
                    file=sys.stderr,
                    leave=False,
                    dynamic_ncols=True,
                )
            except Exception:
                bar = None
        every = max(1, len(self.train_loader) // 20)
        ls = rc["label_smoothing"]
        try:
            for i, (x, y) in enumerate(self.train_loader):
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=self.amp):
                    if rc.get("random_depth"):
                        out = self._at_random_depth(x, (epoch - 1) * len(self.train_loader) + i)
                    else:
                        out = self.fwd_train(x)
                loss = _loss_fn(out, y, ls)
                if step_fault is not None:  # the loop's one check of fault injection
                    loss = step_fault(i, loss)
                if self.loss_ref is None:  # the divergence reference: the run's first loss
                    self.loss_ref = loss.detach().float().item()
                    if not math.isfinite(self.loss_ref):
                        self._diverged(epoch, f"the training loss is {self.loss_ref}")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                b = y.shape[0]
                loss_sum += loss.detach().double() * b
                correct += (out.detach().argmax(1) == y).sum()
                count += b
                if bar is not None:
                    bar.update(1)
                if (i + 1) % every == 0 and (bar is not None or dist.world_size == 1):
                    # one host read every 1/20 epoch: a blown-up run stops without finishing
                    # the epoch (one process only: the ranks would not agree)
                    running = loss_sum.item() / count
                    if bar is not None:
                        bar.set_postfix(loss=f"{running:.4f}")
                    if dist.world_size == 1:
                        self._check_train_loss(epoch, running)
        finally:
            if bar is not None:
                bar.close()
        if dist.world_size > 1:  # every rank evaluates and saves rank 0's BN statistics
            dist.broadcast_buffers(model)
        t = torch.stack(
            [loss_sum, correct.double(), torch.tensor(float(count), dtype=torch.float64, device=device)]
        )
        t = dist.all_reduce(t).cpu()
        n = max(t[2].item(), 1.0)
        train_loss, train_error = t[0].item() / n, 1.0 - t[1].item() / n
        self._check_train_loss(epoch, train_loss)

        weak = reduce_report(_weak_report(model), dist.world_size, device) if self.stochastic else []
        model.eval()  # drift only: the expected increment, BN running statistics
        test_loss, test_error, _ = _eval_sums(self.fwd_eval, self.test_loader, device, self.amp, dist)
        if faults.test_nan:
            test_loss = float("nan")
        if not (math.isfinite(test_loss) and math.isfinite(test_error)):
            self._diverged(epoch, f"the test loss is {test_loss}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_error": train_error,
            "test_error": test_error,
            "test_loss": test_loss,
            "lr": lr,
            "epoch_time": now - t0,
            "epoch_cpu_time": time.process_time() - c0,
            "elapsed": self.elapsed0 + (now - t_start),
            "lm_coefficients": _lm_coefficients(model),
            "weak": weak,
        }
        improved = test_error < self.best
        if improved:
            self.best, self.best_epoch = test_error, epoch
        noise_ranks = dist.all_gather(self.noise.get_state().cpu())
        if self.main:
            from .safe_io import open_append, os_error

            try:
                with open_append(self.run_dir / "metrics.jsonl") as f:
                    f.write(json.dumps(_jsonable(metrics)) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise os_error(e, self.run_dir / "metrics.jsonl") from None
            state = {
                "format": ck.FORMAT,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": {},
                "rng": {
                    **ck.rng_state(self.noise),
                    "noise_ranks": noise_ranks,
                    "loader": {"seed": rc["seed"], "epoch": epoch},
                },
                "best_test_error": self.best,
                "best_epoch": self.best_epoch,
                "loss_ref": self.loss_ref,
                "elapsed": metrics["elapsed"],
                "metrics": metrics,
                "config": rc,
            }
            self._save(state, self.run_dir / "last.pt")
            if faults.kill_after_save:
                os.kill(os.getpid(), 9)
            if improved:  # after last.pt: a kill in between is repaired on --resume
                self._save(state, self.run_dir / "best.pt")
            self.log(
                f"epoch {epoch}/{rc['epochs']}  train loss {train_loss:.4f} err "
                f"{100 * train_error:.2f}%  test loss {test_loss:.4f} err "
                f"{100 * test_error:.2f}%  lr {lr:.4g}  {metrics['epoch_time']:.1f}s"
            )
        if weak:
            self._check_weak(weak, warned)
        if self.callback is not None:
            self.callback(
                {
                    "epoch": epoch,
                    "metrics": metrics,
                    "model": model,
                    "run_dir": str(self.run_dir),
                    "rank": dist.rank,
                }
            )
        return metrics

    def _at_random_depth(self, x, step: int):
        from ..nn.depth import at_depth

        with at_depth(self.model, _depth_of_step(self.rc, step), strict=False):
            return self.fwd_train(x)

    def _check_train_loss(self, epoch: int, loss: float) -> None:
        """TrainingDiverged when ``loss`` is not finite or above DIVERGENCE_FACTOR x the first."""
        if not math.isfinite(loss):
            self._diverged(epoch, f"the training loss is {loss}")
        ref = self.loss_ref
        if ref is not None and ref > 0 and loss > DIVERGENCE_FACTOR * ref:
            self._diverged(
                epoch,
                f"the training loss {loss:.4g} exploded past "
                f"{DIVERGENCE_FACTOR:.0e} x its first value {ref:.4g}",
            )

    def _diverged(self, epoch: int, reason: str = "the loss became NaN or infinite"):
        good = epoch - 1
        last = self.run_dir / "last.pt"
        where = (
            f"the last good checkpoint is {last} (epoch {good})"
            if good > 0
            else "no checkpoint was written (--resume would start the run over)"
        )
        raise TrainingDiverged(
            f"training diverged: {reason} in epoch {epoch}; {where}. Lower "
            f"the learning rate (--lr) and try again"
        )

    def _finish(self, last: dict | None, t_start: float) -> dict:
        rc, dist, device = self.rc, self.dist, self.device
        if last is None:  # nothing left to run
            raise ValueError(f"{self.run_dir}: no epoch to run")
        if self.main and (self.run_dir / "best.pt").is_file():  # recorded from the file itself
            b = ck.load_checkpoint(self.run_dir / "best.pt")
            self.best, self.best_epoch = _checkpoint_error(b), int(b["epoch"])
        final = {
            "test_error": last["test_error"],
            "best_test_error": self.best,
            "best_epoch": self.best_epoch,
            "test_loss": last["test_loss"],
            "train_loss": last["train_loss"],
            "train_error": last["train_error"],
            "params": self.params,
            "epochs": rc["epochs"],
            "wall_time": None,
            "hardware": describe(device, dist.world_size),
            "model": rc["model"],
            "dataset": rc["dataset"],
            "dt": rc["dt"],
            "seed": rc["seed"],
            "stochastic": self.stochastic,
            "lm_coefficients": last["lm_coefficients"],
            "weak": last["weak"],
        }
        if self.stochastic and rc.get("mc_samples", 0) > 0:
            g = torch.Generator(device=device)
            g.manual_seed(_seed(rc["seed"], dist.rank, 11))
            mc_loss, mc_err = _mc_sums(
                self.model, self.test_loader, device, rc["mc_samples"], g, dist, self.amp
            )
            final["test_error_mc"] = mc_err
            final["test_loss_mc"] = mc_loss
            final["mc_samples"] = rc["mc_samples"]
        final["wall_time"] = self.elapsed0 + (time.perf_counter() - t_start)
        final["run_dir"] = str(self.run_dir)
        final["provenance"] = rc["provenance"]
        if self.main:
            _write_json(self.run_dir / "metrics.json", final)
            line = (
                f"done: test error {100 * final['test_error']:.2f}% (best "
                f"{100 * self.best:.2f}% at epoch {self.best_epoch})"
            )
            if "test_error_mc" in final:
                line += f", {final['mc_samples']}-sample MC {100 * final['test_error_mc']:.2f}%"
            self.log(line + f", {final['wall_time']:.1f}s; run folder {self.run_dir}")
            if final["weak"]:
                self.log(
                    "condition (5) per stochastic stage (exact C, K = C/dt^2; empirical "
                    "moments of the last epoch's increments):\n" + format_table(final["weak"])
                )
        return _jsonable(final)
