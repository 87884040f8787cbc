#!/usr/bin/env python
"""Training throughput (images/s) of ResNet-56 and LM-ResNet-56 with two input pipelines.

* ``device``: :class:`sdenet.train.data.DeviceLoader` — the whole split on the device as
  uint8, crop/flip/normalise per batch on the device;
* ``dataloader``: a plain ``torch.utils.data.DataLoader`` over a ``Dataset`` on the same
  uint8 arrays, each sample cropped (pad 4), flipped and normalised on the CPU in the
  workers, ``pin_memory`` on CUDA, batches copied with ``non_blocking=True``.

Both feed the same SGD training step (forward, cross-entropy, backward, step) in the same
process; each measurement trains ``--warmup`` steps untimed and then ``--steps`` timed steps
(CUDA synchronised before reading the clock). A loader-only rate (batches drawn, moved to
the device, nothing trained) is also reported for each pipeline.

    python experiments/benchmarks/gpu_throughput.py                      # CUDA, 100 steps
    python experiments/benchmarks/gpu_throughput.py --device cpu --steps 2 --batch-size 32

Writes ``gpu_throughput-<device type>.md`` and ``.json`` into ``--out`` (default
``experiments/results``) with the hardware named; prints the markdown.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402


class ArrayImages(torch.utils.data.Dataset):
    """uint8 NHWC images with per-sample CPU augmentation: zero-pad 4, random 32×32 crop,
    horizontal flip with probability ½, then ``(x/255 - mean)/std`` as float32 CHW — what
    torchvision's ``RandomCrop(32, 4), RandomHorizontalFlip, ToTensor, Normalize`` does."""

    def __init__(self, x_uint8_nhwc, y, mean, std, pad: int = 4, augment: bool = True):
        self.x = torch.from_numpy(np.ascontiguousarray(x_uint8_nhwc)).permute(0, 3, 1, 2).contiguous()
        self.y = torch.as_tensor(np.asarray(y), dtype=torch.int64)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.pad, self.augment = int(pad), bool(augment)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        img = self.x[i]
        if self.augment:
            p = self.pad
            h, w = img.shape[1:]
            padded = torch.nn.functional.pad(img, (p, p, p, p))
            dy, dx = (int(v) for v in torch.randint(0, 2 * p + 1, (2,)))
            img = padded[:, dy : dy + h, dx : dx + w]
            if torch.rand(()) < 0.5:
                img = img.flip(-1)
        return (img.float().div_(255.0) - self.mean) / self.std, self.y[i]


def plain_loader(ds, batch_size: int, workers: int, device: torch.device, seed: int):
    dataset = ArrayImages(ds.x_train, ds.y_train, ds.mean, ds.std)
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=g,
    )


class _Forever:
    """Endless (x, y) batches on the device from a loader, epoch after epoch."""

    def __init__(self, loader, device, to_device: bool):
        self.loader, self.device, self.to_device = loader, device, to_device
        self.epoch = 0
        self.it = None

    def next(self):
        while True:
            if self.it is None:
                if hasattr(self.loader, "set_epoch"):
                    self.loader.set_epoch(self.epoch)
                self.epoch += 1
                self.it = iter(self.loader)
            try:
                x, y = next(self.it)
            except StopIteration:
                self.it = None
                continue
            if self.to_device:
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
            return x, y


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    model_name, batches: _Forever, *, device, num_classes, steps, warmup, amp, channels_last, seed
) -> dict:
    """Images/s of SGD training steps of ``model_name`` fed by ``batches``."""
    from sdenet import models

    torch.manual_seed(seed)
    model = models.create(model_name, num_classes=num_classes).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    use_amp = bool(amp) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    def step():
        x, y = batches.next()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return x.shape[0]

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    n = sum(step() for _ in range(steps))
    _sync(device)
    dt = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    return dict(images=n, seconds=dt, images_per_s=n / dt, params=params)


def measure_loader(batches: _Forever, *, device, steps, warmup) -> dict:
    """Images/s of the pipeline alone: batches produced and on the device, nothing trained."""
    for _ in range(warmup):
        batches.next()
    _sync(device)
    t0 = time.perf_counter()
    n = 0
    for _ in range(steps):
        x, _ = batches.next()
        n += x.shape[0]
    _sync(device)
    dt = time.perf_counter() - t0
    return dict(images=n, seconds=dt, images_per_s=n / dt)


def _hardware(device) -> str:
    try:
        from sdenet.train.hardware import describe

        return describe(device)
    except Exception:
        import platform

        return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores), torch {torch.__version__}"


def run(args) -> dict:
    from sdenet.train.data import load_dataset, make_loaders

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available here (use --device cpu for a smoke run)")
    for name in ("steps", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or args.workers < 0:
        raise ValueError("--warmup and --workers must be >= 0")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    ds = load_dataset(args.dataset)
    if len(ds.x_train) < args.batch_size:
        raise ValueError(f"--batch-size {args.batch_size} exceeds the {len(ds.x_train)} training images")
    rows = []
    for pipeline in ("device", "dataloader"):

        def batches():
            if pipeline == "device":  # noqa: B023
                train, _ = make_loaders(
                    ds,
                    batch_size=args.batch_size,
                    device=device,
                    seed=args.seed,
                    channels_last=args.channels_last,
                )
                return _Forever(train, device, to_device=False)
            return _Forever(
                plain_loader(ds, args.batch_size, args.workers, device, args.seed), device, to_device=True
            )

        r = measure_loader(batches(), device=device, steps=args.steps, warmup=args.warmup)
        rows.append(dict(model="(loader only)", pipeline=pipeline, **r))
        for model_name in args.models:
            r = measure(
                model_name,
                batches(),
                device=device,
                num_classes=ds.num_classes,
                steps=args.steps,
                warmup=args.warmup,
                amp=args.amp,
                channels_last=args.channels_last,
                seed=args.seed,
            )
            rows.append(dict(model=model_name, pipeline=pipeline, **r))
            print(f"{model_name:16s} {pipeline:10s} {r['images_per_s']:9.1f} images/s", file=sys.stderr)
    return dict(
        device=str(device),
        hardware=_hardware(device),
        torch=torch.__version__,
        date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command="python experiments/benchmarks/gpu_throughput.py "
        + " ".join(shlex.quote(a) for a in args.argv),
        dataset=f"{ds.name} ({len(ds.x_train)} training images; source {ds.source})",
        batch_size=args.batch_size,
        steps=args.steps,
        warmup=args.warmup,
        workers=args.workers,
        amp=bool(args.amp and device.type == "cuda"),
        channels_last=args.channels_last,
        rows=rows,
    )


def markdown(res: dict) -> str:
    kind = "GPU" if res["device"].startswith("cuda") else "CPU"
    lines = [
        f"# Training throughput, {kind} ({res['device']})",
        "",
        f"- hardware: {res['hardware']}",
        f"- command: `{res['command']}`",
        f"- written: {res['date']}",
        f"- dataset: {res['dataset']}; batch size {res['batch_size']}; {res['warmup']} warm-up + "
        f"{res['steps']} timed steps; DataLoader workers {res['workers']}; bf16 autocast "
        f"{'on' if res['amp'] else 'off'}; channels_last {'on' if res['channels_last'] else 'off'}",
        "",
        "| model | pipeline | images/s | timed images | seconds |",
        "|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['model']} | {r['pipeline']} | {r['images_per_s']:.1f} | {r['images']} | {r['seconds']:.3f} |"
        )
    by = {(r["model"], r["pipeline"]): r["images_per_s"] for r in res["rows"]}
    ratios = [
        f"{m}: {by[(m, 'device')] / by[(m, 'dataloader')]:.2f}×"
        for m in dict.fromkeys(r["model"] for r in res["rows"])
        if (m, "device") in by and (m, "dataloader") in by
    ]
    lines += ["", "Device pipeline over DataLoader pipeline: " + ", ".join(ratios) + ".", ""]
    if kind == "CPU":
        lines += ["These are CPU figures (a smoke run of the script), not GPU throughput.", ""]
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cuda (default when available), cuda:1, cpu")
    p.add_argument("--models", nargs="+", default=["resnet56", "lm_resnet56"])
    p.add_argument("--dataset", default="sample", help="dataset spec for sdenet.train.data.load_dataset")
    p.add_argument("--steps", type=int, default=100, help="timed training steps per measurement")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        default=str(ROOT / "experiments" / "results"),
        help="folder for gpu_throughput-<device>.md/.json",
    )
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        res = run(args)
    except ValueError as err:
        print(f"gpu_throughput: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kind = torch.device(res["device"]).type
    md = markdown(res)
    (out / f"gpu_throughput-{kind}.md").write_text(md)
    from sdenet.provenance import provenance

    res["provenance"] = provenance(
        seed=getattr(args, "seed", 0), command=res.get("command"), device=res["device"]
    )
    (out / f"gpu_throughput-{kind}.json").write_text(json.dumps(res, indent=1) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
