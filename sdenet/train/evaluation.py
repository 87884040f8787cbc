"""Evaluation: the test loss and error sums of a network over a loader (all-reduced over the
processes), its Monte Carlo prediction (:func:`sdenet.nn.mc_predict`, the one implementation),
the checks that a dataset fits a model, and :func:`evaluate` of a saved checkpoint."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from . import checkpoint as ck
from . import usermodel
from .config import DIVERGENCE_FACTOR, MAX_MC_SAMPLES, _number, _positive_int, is_user_model
from .datasource import _agreed_data_root, _image_folder_loaders, is_image_folder
from .distributed import _Dist, _seed, resolve_device
from .hardware import describe
from .jsonio import _jsonable
from .usermodel import _first_line, _is_stochastic, _model_known, _set_generator

__all__ = ["evaluate"]


@torch.no_grad()
def _eval_sums(fwd, loader, device, amp: bool, dist: _Dist):
    """Summed test loss, number correct and count over this rank's share, all-reduced."""
    loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    for x, y in loader:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            out = fwd(x)
        loss += F.cross_entropy(out.float(), y, reduction="sum").double()
        correct += (out.argmax(1) == y).sum()
        count += y.shape[0]
    t = torch.stack([loss, correct.double(), torch.tensor(float(count), dtype=torch.float64, device=device)])
    t = dist.all_reduce(t).cpu()
    n = max(t[2].item(), 1.0)
    return t[0].item() / n, 1.0 - t[1].item() / n, int(t[2].item())


def _mc_predict_fn():
    """:func:`sdenet.nn.mc_predict`, looked up when called (``sdenet.nn`` is imported on first
    use; tests substitute a stand-in here)."""
    from ..nn import mc_predict

    return mc_predict


@torch.no_grad()
def _mc_sums(model, loader, device, samples: int, generator, dist: _Dist, amp: bool):
    """Test loss and error of the Monte Carlo average of ``samples`` noisy passes."""
    mc_predict = _mc_predict_fn()
    loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    for x, y in loader:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            prob = mc_predict(model, x, samples=samples, generator=generator)
        prob = prob.float()
        loss += -(prob.gather(1, y[:, None]).clamp_min(1e-12).log()).sum().double()
        correct += (prob.argmax(1) == y).sum()
        count += y.shape[0]
    t = torch.stack([loss, correct.double(), torch.tensor(float(count), dtype=torch.float64, device=device)])
    t = dist.all_reduce(t).cpu()
    n = max(t[2].item(), 1.0)
    return t[0].item() / n, 1.0 - t[1].item() / n


def _checkpoint_error(c: dict) -> float:
    """The test error of the epoch a checkpoint holds."""
    m = c.get("metrics")
    if isinstance(m, dict) and isinstance(m.get("test_error"), (int, float)):
        return float(m["test_error"])
    return float(c.get("best_test_error", float("inf")))


def _check_fits(model, image_shape, num_classes: int, rc: dict, device, noise=None) -> None:
    """Refuse, before training, a dataset whose images the model cannot take: the channels
    against the first convolution's, then one forward pass of two blank images (eval mode, no
    gradient, random states restored) that must give ``(2, num_classes)`` logits."""
    h, w, c = image_shape
    what = f"{rc['dataset']}: its images are {c}-channel {h}x{w}"
    name = rc["model"]
    for path, m in model.named_modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            if m.in_channels != c:
                raise ValueError(
                    f"{what}, but {name}'s first convolution ({path or 'the model'}) "
                    f"takes {m.in_channels}-channel images"
                )
            break
    x = torch.zeros(2, c, h, w, device=device)
    if rc.get("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last)
    cpu_state = torch.get_rng_state()
    noise_state = noise.get_state() if noise is not None else None
    was = model.training
    model.eval()
    try:
        # the same autocast as the training pass, so the probe runs the code training will run
        amp = bool(rc.get("amp")) and (device.type != "cuda" or torch.cuda.is_bf16_supported())
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
    except Exception as e:
        raise ValueError(
            f"{what}, and {name} cannot take them ({type(e).__name__}: {_first_line(e)})"
        ) from None
    finally:
        model.train(was)
        torch.set_rng_state(cpu_state)
        if noise is not None:
            noise.set_state(noise_state)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"{what}, and {name} returns {got} for 2 of them; expected logits of "
            f"shape (2, {num_classes}) for its {num_classes} classes"
        )


def _eval_precision(rc: dict, dev: torch.device) -> tuple[bool, bool]:
    """``(amp, channels_last)`` for evaluating a run on ``dev``: the run's own settings on the
    device type it trained on (so an explicit CPU bf16 run evaluates under CPU autocast), the
    defaults of ``dev`` otherwise (CUDA: both; CPU: neither)."""
    if torch.device(rc.get("device", "cpu")).type == dev.type:
        amp, channels_last = bool(rc.get("amp")), bool(rc.get("channels_last"))
    else:
        amp = channels_last = dev.type == "cuda"
    if amp and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        amp = False
    return amp, channels_last


#: a weight of a trained float network beyond this magnitude is broken, not learned
ABSURD_WEIGHT = 1e8


def _check_finite_weights(state: dict, path) -> None:
    """ValueError when a checkpoint's weights hold NaN or infinite values, or values beyond
    :data:`ABSURD_WEIGHT`: no test error of such a network means anything."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(
            f"{path}: its weights hold NaN or infinite values ({len(bad)} tensors, "
            f"e.g. {bad[0]}); the network is broken, nothing to evaluate"
        )
    big = [
        (k, float(v.abs().max()))
        for k, v in state.items()
        if v.is_floating_point() and v.numel() and float(v.abs().max()) > ABSURD_WEIGHT
    ]
    if big:
        raise ValueError(
            f"{path}: its weights are absurd ({big[0][0]} reaches {big[0][1]:.3g}, "
            f"beyond {ABSURD_WEIGHT:.0e}); the network is broken, nothing to evaluate"
        )


def _check_sane_loss(loss: float, num_classes: int, path) -> str | None:
    """ValueError instead of a number when the test loss is NaN or infinite; a warning (returned)
    when it is absurd: above :data:`DIVERGENCE_FACTOR` times the loss of a uniform guess,
    ``log(classes)`` (a network applied to images it does not suit can do that)."""
    ref = math.log(max(int(num_classes), 2))
    if not math.isfinite(loss):
        raise ValueError(
            f"{path}: its test loss is {loss}: the network overflows on these "
            f"images, so no test error is reported"
        )
    if loss > DIVERGENCE_FACTOR * ref:
        return (
            f"{path}: its test loss {loss:.4g} is absurd against {ref:.3g} for a uniform guess: "
            f"the weights are broken or do not suit these images; read the error with care"
        )
    return None


def _depth_context(model, depth):
    """``(context manager, result fields)`` running ``model`` at depth factor ``depth`` (None: as it is)."""
    if depth is None:
        return contextlib.nullcontext(), {}
    from ..nn.depth import at_depth, depth_compute, depth_steps, factor_float, parse_depth_factor

    f = parse_depth_factor(depth)
    # at_depth refuses (ValueError) a stage it cannot coarsen when entered, before any work
    return at_depth(model, f), {
        "depth": factor_float(f),
        "steps": depth_steps(model, f),
        "steps_trained": depth_steps(model, 1),
        "relative_compute": depth_compute(model, f),
    }


def _binomial_se(error: float, n: int) -> float:
    """Standard error ``sqrt(e(1 - e)/n)`` of an error rate measured on ``n`` independent images."""
    return math.sqrt(max(error * (1.0 - error), 0.0) / n) if n > 0 else float("nan")


def evaluate(
    checkpoint,
    *,
    dataset: str | None = None,
    samples: int | None = None,
    device="auto",
    batch_size: int | None = None,
    limit_test: int | None = None,
    data_root=None,
    seed: int = 0,
    model: str | None = None,
    resolution: int | None = None,
    rescale: bool = False,
    rescale_method: str = "atrous",
    depth=None,
    recalibrate_bn: int = 0,
) -> dict:
    """Test error of a saved network.

    The checkpoint's config names the model and dataset (``dataset`` overrides). Returns
    ``test_error``/``test_loss`` of the drift-only (eval-mode) network and, for a stochastic
    network with ``samples > 0`` (default 10), ``test_error_mc``/``test_loss_mc`` of the average
    of the softmax over ``samples`` noisy passes (:func:`sdenet.nn.mc_predict`).

    ``test_error_se`` / ``test_error_mc_se`` are binomial standard errors over the test images,
    ``sqrt(e(1 - e)/n)``: with the weights fixed, whether an image is misclassified (by the
    drift, or by the average of ``samples`` noisy passes) is a Bernoulli variable, independent
    across images and draws, so this is the standard error of the measured error as an estimate
    of the expected error over images and network noise.

    A checkpoint of a user's network (``package.module:factory``) is evaluated only when
    ``model`` names the same spec: importing a module runs its code, and a file does not get to
    choose which module is imported.

    ``resolution``: the test images' height (area-downsampled; default: the resolution the
    network was trained at); ``rescale``: carry the network from that resolution to
    ``resolution`` first (:func:`sdenet.nn.rescale` with ``rescale_method``: "atrous", the
    default, or "moments"), else the kernels are applied as they are.

    ``depth``: run the network's stages at this depth factor with its own weights
    (:func:`sdenet.nn.at_depth`: 2 is ``refine(net, 2)``, 0.5 is ``coarsen(net, 2)``); the
    result then also holds ``depth``, ``steps`` and ``relative_compute``
    (:func:`sdenet.train.depth.evaluate_depths` evaluates several).

    ``recalibrate_bn``: before testing, recompute the batch-norm statistics (at ``depth`` and
    ``resolution``) from the first ``recalibrate_bn`` training images, unaugmented
    (:func:`sdenet.nn.depth.recalibrate_batchnorm`; arrays only); the result then holds
    ``recalibrated_bn``, the number of images used.
    """
    from ..nn.rescale import METHODS as _RESCALE_METHODS

    if rescale_method not in _RESCALE_METHODS:
        raise ValueError(
            f"rescale_method must be one of {', '.join(_RESCALE_METHODS)}, got {rescale_method!r}"
        )
    samples = None if samples is None else int(_number("samples", samples, lo=0.0, allow_none=False))
    if samples is not None and samples > MAX_MC_SAMPLES:
        raise ValueError(
            f"samples={samples} is above the bound of {MAX_MC_SAMPLES:,} Monte Carlo "
            f"draws (each is a pass over the test set)"
        )
    batch_size = _positive_int("batch_size", batch_size)
    limit_test = _positive_int("limit_test", limit_test)
    recalibrate_bn = int(_number("recalibrate_bn", recalibrate_bn or 0, lo=0.0, allow_none=False))
    dev = resolve_device(device)
    c = ck.load_checkpoint(checkpoint)
    path = Path(checkpoint) / "last.pt" if Path(checkpoint).is_dir() else Path(checkpoint)
    ck.validate_checkpoint(c, path, known_model=_model_known)
    rc = c["config"]
    if is_user_model(rc["model"]) and model != rc["model"]:
        raise ValueError(
            f"{path}: a checkpoint of the user model {rc['model']!r}; importing it "
            f"runs its code, so name it yourself with --model {rc['model']}"
        )
    if model is not None and model != rc["model"]:
        raise ValueError(f"{path}: a checkpoint of {rc['model']!r}, not {model!r}")
    if not isinstance(rc.get("model_overrides", {}), dict):
        raise ValueError(f"{path}: the checkpoint's config entry 'model_overrides' is malformed")
    from .cifar import load_dataset
    from .loaders import DeviceLoader

    spec = dataset or rc.get("dataset")
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"{path}: the checkpoint's config names no dataset; give --dataset")
    _positive_int("resolution", resolution)
    r0 = res = None
    eval_batch = batch_size or rc.get("eval_batch_size") or max(rc.get("batch_size", 128), 256)
    calibration = None
    if is_image_folder(spec):
        if resolution is not None or rescale or recalibrate_bn:
            raise ValueError(
                f"{spec}: resolution, rescale and recalibrate_bn apply to CIFAR-style arrays, "
                f"not to image folders"
            )
        _, loader = _image_folder_loaders(
            spec, limit_test=limit_test, batch_size=eval_batch, device=dev, seed=seed
        )
        num_classes = loader.num_classes
        n_images = eval_batch
    else:
        ds = load_dataset(spec, root=_agreed_data_root(rc, data_root, path) if dataset is None else data_root)
        num_classes = ds.num_classes
        image_shape = tuple(int(v) for v in ds.x_test.shape[1:])
        x_test, y_test = ds.x_test, ds.y_test
        if limit_test is not None:
            x_test, y_test = x_test[:limit_test], y_test[:limit_test]
        n_images = len(x_test)
        from .multiscale import checkpoint_resolution

        r0 = checkpoint_resolution(c, ds.image_shape[1])
        res = r0 if resolution is None else resolution

        def fed(x, y):  # normalised with the statistics of the training data the network saw
            return DeviceLoader(
                x,
                y,
                batch_size=eval_batch,
                train=False,
                mean=ds.mean,
                std=ds.std,
                device=dev,
                seed=seed,
                resolution=res,
                channels_last=_eval_precision(rc, dev)[1],
            )

        loader = fed(x_test, y_test)
        if recalibrate_bn:  # the first training images, as the test images are fed
            calibration = fed(ds.x_train[:recalibrate_bn], ds.y_train[:recalibrate_bn])
    if rc.get("num_classes") not in (None, num_classes):
        raise ValueError(
            f"{spec}: {num_classes} classes, but {checkpoint} was trained on {rc['num_classes']}"
        )
    torch.manual_seed(seed)
    spec_model = rc["model"]
    net = usermodel._create_model(
        spec_model,
        num_classes,
        dict(rc.get("model_overrides") or {}),
        where=str(path),
        batch=min(eval_batch, n_images),
        image=res,
        train=False,
        device=dev,
    )
    from .multiscale import apply_dilation, checkpoint_dilation

    apply_dilation(net, checkpoint_dilation(rc, path))
    ck.check_model_state(net, c["model"], path, repr(spec_model))
    _check_finite_weights(c["model"], path)
    try:
        net.load_state_dict(c["model"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path}: its weights do not load into {spec_model!r} ({type(e).__name__}: {_first_line(e)})"
        ) from None
    amp, channels_last = _eval_precision(rc, dev)
    if rescale and res != r0 and res is not None and r0 is not None:  # arrays only
        from ..nn import rescale as rescale_model

        net = rescale_model(net, res / r0, method=rescale_method)
    net.to(dev).eval()
    if channels_last:
        net.to(memory_format=torch.channels_last)
    if not is_image_folder(spec):
        _check_fits(
            net,
            image_shape,
            num_classes,
            {**rc, "dataset": spec, "amp": amp, "channels_last": channels_last},
            dev,
        )
    stochastic = _is_stochastic(net)
    one = _Dist.__new__(_Dist)
    one.world_size, one.rank, one.local_rank, one.owned = 1, 0, 0, False
    depth_cm, depth_info = _depth_context(net, depth)
    with depth_cm:
        if calibration is not None:
            from ..nn.depth import recalibrate_batchnorm

            depth_info["recalibrated_bn"] = recalibrate_batchnorm(net, (x for x, _ in calibration))
        test_loss, test_error, n = _eval_sums(net, loader, dev, amp, one)
    warning = _check_sane_loss(test_loss, num_classes, path)
    out = {
        "checkpoint": str(checkpoint),
        "model": rc["model"],
        "dataset": spec,
        "epoch": int(c.get("epoch", 0)),
        "n_test": n,
        "test_error": test_error,
        "test_error_se": _binomial_se(test_error, n),
        "test_loss": test_loss,
        "stochastic": stochastic,
        "device": str(dev),
        "hardware": describe(dev),
        "resolution": res,
        "trained_resolution": r0,
        "rescaled": bool(rescale and res != r0),
        **depth_info,
        "rescale_method": rescale_method if rescale and res != r0 else None,
    }
    if warning:
        out["warning"] = warning
    if samples is None:
        samples = 10 if stochastic else 0
    if stochastic and samples > 0:
        g = torch.Generator(device=dev)
        g.manual_seed(_seed(seed, 0, 11))
        _set_generator(net, g)
        with _depth_context(net, depth)[0]:
            mc_loss, mc_err = _mc_sums(net, loader, dev, samples, g, one, amp)
        out.update(
            test_error_mc=mc_err,
            test_error_mc_se=_binomial_se(mc_err, n),
            test_loss_mc=mc_loss,
            mc_samples=samples,
        )
    return _jsonable(out)
