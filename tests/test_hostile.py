"""A generated suite of hostile run folders and checkpoints (issue 16, SECURITY.md).

Every run folder and checkpoint is data: each case below hands the ``sdenet`` command a folder or
file made hostile in one way (several variants per class), and asserts that the command ends with
exit status 2 and one line on stderr, no traceback, nothing written anywhere under the test's root
(the run folder, the folders around it, the working directory: compared byte for byte before and
after), and nothing run that a file named. Classes:

1. files choosing code, downloads or write paths (user modules, data roots, plan sub-folders);
2. symbolic links where sdenet writes, and hostile output paths;
3. sizes that would allocate without bound (flags, stored configs, model_overrides, archives) --
   run in a child process under ``RLIMIT_AS``;
4. locks: a live run in another process against every writing command; two simultaneous starts;
   a stale lock taken over;
5. config.json and checkpoint disagreeing;
6. malformed configs through --init and refine, broken weights, overflowing flags, user modules
   failing to import, a full disk, a step below working precision.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from hostile import (
    EVIL_MODULE,
    TINY,
    child,
    child_cases,
    copy_run,
    diff,
    edit_checkpoint,
    edit_json,
    lock_holder,
    one_line,
    rewrite_zip,
    set_config,
    snapshot,
)

from sdenet.cli import main


@pytest.fixture(autouse=True)
def _no_fault(monkeypatch):
    monkeypatch.delenv("SDENET_FAULT", raising=False)
    monkeypatch.delenv("SDENET_DATA", raising=False)


def _interrupted_run(out: Path, extra=()) -> Path:
    """A 2-epoch run stopped after epoch 1 (resumable): last.pt, best.pt, config.json, metrics."""
    os.environ["SDENET_FAULT"] = "interrupt@2"
    try:
        code = main(["train", "--model", "tiny_resnet", "--epochs", "2", "--out", str(out), *TINY, *extra])
    finally:
        del os.environ["SDENET_FAULT"]
    assert code == 130 and (out / "last.pt").is_file()
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A resumable plain run, a resumable multilevel run (cycle0 stopped after its epoch 1 of 2)
    and a finished run, made once."""
    b = tmp_path_factory.mktemp("hostile-base")
    runs = {"run": _interrupted_run(b / "run")}
    os.environ["SDENET_FAULT"] = "interrupt@2"
    try:
        code = main(
            [
                "train",
                "--model",
                "tiny_resnet",
                "--multilevel",
                "1",
                "--refine",
                "2",
                "--epochs",
                "4",
                "--out",
                str(b / "ml"),
                *TINY,
            ]
        )
    finally:
        del os.environ["SDENET_FAULT"]
    assert code == 130 and (b / "ml" / "cycle0" / "last.pt").is_file()
    runs["ml"] = b / "ml"
    assert main(["train", "--model", "tiny_resnet", "--epochs", "1", "--out", str(b / "done"), *TINY]) == 0
    runs["done"] = b / "done"
    return runs


@pytest.fixture
def root(tmp_path, monkeypatch, base):
    """The test's root, which is also the working directory: a copy of each base run, a folder
    ``outside/`` with a file that hostile links point at."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    for name, src in base.items():
        copy_run(src, tmp_path / name)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "precious.txt").write_text("do not touch\n")
    return tmp_path


def refused(capsys, root, argv, needle=None) -> str:
    """Run ``sdenet ARGV`` here; assert exit 2, one line, no traceback, the tree under ``root``
    unchanged byte for byte; return the line (which must hold ``needle``)."""
    capsys.readouterr()
    before = snapshot(root)
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    line = one_line(code, cap.err)
    assert not diff(before, snapshot(root)), diff(before, snapshot(root))
    if needle is not None:
        assert needle.lower() in line.lower(), line
    return line


# ------------------------------------------------------------------------------------------
# 1. Files never choose code, downloads or write paths
# ------------------------------------------------------------------------------------------


def _evil(root) -> Path:
    marker = root / "outside" / "ran.txt"
    (root / "evilnet.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    return marker


@pytest.mark.parametrize("command", ["resume", "eval", "refine"])
def test_a_user_module_named_by_a_file_is_never_imported(root, capsys, command):
    marker = _evil(root)
    set_config(root / "run", model="evilnet:make")
    argv = {
        "resume": ["train", "--resume", root / "run"],
        "eval": ["eval", root / "run"],
        "refine": ["refine", root / "run", "--out", root / "outside" / "r.pt"],
    }[command]
    line = refused(capsys, root, argv)
    assert "evilnet" in line and not marker.exists()


def test_a_warm_start_takes_only_weights_from_a_file_naming_a_user_module(root, capsys):
    """--init with such a checkpoint builds the model the command line names; the module the
    file names is never imported."""
    marker = _evil(root)
    set_config(root / "run", model="evilnet:make")
    assert (
        main(
            [
                "train",
                "--model",
                "tiny_resnet",
                "--init",
                str(root / "run"),
                "--out",
                str(root / "new"),
                "--epochs",
                "1",
                *TINY,
            ]
        )
        == 0
    )
    assert not marker.exists() and "evilnet" not in sys.modules


def test_a_plan_naming_a_user_module_is_refused_unless_the_command_line_names_it(root, capsys):
    marker = _evil(root)
    edit_json(
        root / "ml" / "multilevel.json",
        lambda d: (d.update(model="evilnet:make"), d["train"].update(model="evilnet:make")),
    )
    refused(capsys, root, ["train", "--resume", root / "ml"], "--model evilnet:make")
    assert not marker.exists()


@pytest.mark.parametrize("folder", ["../outside", "/tmp", "cycle0/../../outside", "", "a\\..\\b"])
def test_plan_sub_folders_must_stay_inside_the_run_folder(root, capsys, folder):
    edit_json(root / "ml" / "multilevel.json", lambda d: d["cycles"][1].update(dir=folder))
    refused(capsys, root, ["train", "--resume", root / "ml"], "multilevel.json")


def test_a_plan_sub_folder_that_is_a_link_out_of_the_run_is_refused(root, capsys):
    (root / "ml" / "cycle1").symlink_to(root / "outside", target_is_directory=True)
    refused(capsys, root, ["train", "--resume", root / "ml"], "symbolic link")


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d.update(levels=10**6), "levels"),
        (lambda d: d["cycles"][0].update(epochs=10**12), "epochs"),
        (lambda d: d["cycles"][1].update(refine=1e300), "refine"),
        (lambda d: d["train"].update(out="/var/elsewhere"), "unknown"),
        (lambda d: d["train"].update(resume="/var/elsewhere"), "unknown"),
        (lambda d: d.update(cycles="all"), "cycles"),
        (lambda d: d.clear(), "format"),
    ],
)
def test_a_malformed_plan_is_refused(root, capsys, mutate, needle):
    edit_json(root / "ml" / "multilevel.json", mutate)
    refused(capsys, root, ["train", "--resume", root / "ml"], needle)


def test_a_recorded_data_root_is_used_only_when_the_command_line_agrees(root, capsys):
    data = root / "outside" / "data"
    set_config(root / "run", data_root=str(data))
    refused(capsys, root, ["train", "--resume", root / "run"], f"--data-root {data}")
    refused(capsys, root, ["eval", root / "run"], f"--data-root {data}")
    edit_json(root / "ml" / "multilevel.json", lambda d: d["train"].update(data_root=str(data)))
    refused(capsys, root, ["train", "--resume", root / "ml"], f"--data-root {data}")


def test_a_plan_does_not_turn_on_downloads(root, capsys, monkeypatch):
    """cifar10 with download recorded in the plan: without --download nothing is fetched (the
    data are missing, so the resumed cycle stops with one line naming --download)."""
    import urllib.request

    def no_network(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setenv("SDENET_DATA", str(root / "outside" / "nodata"))
    edit_json(root / "ml" / "multilevel.json", lambda d: d["train"].update(download=True, dataset="cifar10"))
    set_config(root / "ml" / "cycle0", dataset="cifar10")
    line = refused(capsys, root, ["train", "--resume", root / "ml"])
    assert "download" in line.lower()


# ------------------------------------------------------------------------------------------
# 2. No symbolic link is followed on write; output paths are checked
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["metrics.jsonl", ".lock", "best.pt", "config.json", "metrics.json", ".config.json.tmp"]
)
def test_a_run_folder_holding_a_link_is_refused(root, capsys, name):
    target = root / "outside" / "precious.txt"
    path = root / "run" / name
    if path.exists():
        path.unlink()
    path.symlink_to(target)
    refused(capsys, root, ["train", "--resume", root / "run"], "symbolic link")
    assert target.read_text() == "do not touch\n"


def test_a_multilevel_folder_holding_a_link_is_refused(root, capsys):
    (root / "ml" / "cycle0" / "metrics.jsonl").unlink()
    (root / "ml" / "cycle0" / "metrics.jsonl").symlink_to(root / "outside" / "precious.txt")
    refused(capsys, root, ["train", "--resume", root / "ml"], "symbolic link")


def test_plot_into_a_folder_with_a_link_where_a_figure_goes_is_refused(root, capsys):
    (root / "done" / "errors.png").symlink_to(root / "outside" / "precious.txt")
    refused(capsys, root, ["plot", root / "done"], "symbolic link")


@pytest.mark.parametrize(
    "kind",
    [
        "link-file",
        "link-dir",
        "device",
        "empty",
        "no-parent",
        "folder",
        "run-checkpoint",
        "other-run-checkpoint",
    ],
)
def test_refine_out_must_be_a_new_or_regular_file(root, capsys, kind):
    o = root / "outside"
    out = {
        "link-file": o / "link.pt",
        "link-dir": o / "linkdir" / "x.pt",
        "device": os.devnull,
        "empty": "",
        "no-parent": o / "missing" / "x.pt",
        "folder": o,
        "run-checkpoint": root / "done" / "last.pt",
        "other-run-checkpoint": root / "ml" / "cycle0" / "best.pt",
    }[kind]
    if kind == "link-file":
        out.symlink_to(o / "precious.txt")
    if kind == "link-dir":
        (o / "linkdir").symlink_to(root / "done", target_is_directory=True)
    refused(capsys, root, ["refine", root / "run", "--out", out, "--no-eval"], "--out")


@pytest.mark.parametrize("command", ["train", "plot", "theory", "weak"])
@pytest.mark.parametrize("kind", ["link", "device", "empty"])
def test_every_output_option_refuses_links_devices_and_empty_paths(root, capsys, command, kind):
    o = root / "outside"
    folder = command != "weak"
    link = o / ("linkdir" if folder else "fig.png")
    link.symlink_to(root / "done" if folder else o / "precious.txt", target_is_directory=folder)
    out = {"link": link, "device": os.devnull, "empty": ""}[kind]
    argv = {
        "train": ["train", "--model", "tiny_resnet", "--epochs", "1", *TINY, "--out", out],
        "plot": ["plot", root / "done", "--out", out],
        "theory": ["theory", "--items", "stability", "--quick", "--out", out],
        "weak": ["weak", "check", "--law", "uniform", "--samples", "100", "--plot", out],
    }[command]
    if command == "theory":
        pytest.importorskip("theory")
    line = refused(capsys, root, argv)
    assert "--out" in line or "--plot" in line


# ------------------------------------------------------------------------------------------
# 3. Bounded sizes (child processes under RLIMIT_AS)
# ------------------------------------------------------------------------------------------


#: each case: (how to make the run folder hostile, the command line); all run in one child
#: process under RLIMIT_AS
_SIZE_CASES = {
    "refine-factor": (None, lambda run, o: ["refine", run, "--factor", "1000000000", "--out", o / "x.pt"]),
    "train-refine": (
        None,
        lambda run, o: [
            "train",
            "--model",
            "tiny_resnet",
            "--refine",
            "1000000000",
            "--epochs",
            "1",
            "--out",
            o / "new",
            *TINY,
        ],
    ),
    "train-activations": (
        None,
        lambda run, o: [
            "train",
            "--model",
            "tiny_resnet",
            "--epochs",
            "1",
            "--out",
            o / "new",
            "--dataset",
            "sample",
            "--batch-size",
            "1000",
            "--refine",
            "64",
            "--device",
            "cpu",
            "--quiet",
        ],
    ),
    "train-multilevel": (
        None,
        lambda run, o: [
            "train",
            "--model",
            "tiny_resnet",
            "--multilevel",
            "1000000",
            "--epochs",
            "1",
            "--out",
            o / "new",
            *TINY,
        ],
    ),
    "stored-refine": ({"model_overrides": {"refine": 10**9}}, lambda run, o: ["train", "--resume", run]),
    "stored-widths": (
        {"model_overrides": {"widths": [1 << 20] * 3}},
        lambda run, o: ["train", "--resume", run],
    ),
    "stored-classes": (
        {"num_classes": 10**11},
        lambda run, o: ["refine", run, "--out", o / "x.pt", "--no-eval"],
    ),
    "eval-overrides": ({"model_overrides": {"widths": [1 << 20] * 3}}, lambda run, o: ["eval", run]),
    "refine-blocks": (
        {"model_overrides": {"blocks": [10**8] * 3}},
        lambda run, o: ["refine", run, "--out", o / "x.pt", "--no-eval"],
    ),
    "init-stored": (
        {"model_overrides": {"refine": 10**12}},
        lambda run, o: [
            "train",
            "--model",
            "tiny_resnet",
            "--init",
            run,
            "--epochs",
            "1",
            "--out",
            o / "new",
            *TINY,
        ],
    ),
}


def test_sizes_that_cannot_fit_are_refused_before_allocation(root):
    """Flags, stored configs and model_overrides that would allocate beyond the machine: every
    one refused with one line (exit 2) before anything is allocated, in a child process whose
    address space is limited (a failure cannot take the machine down)."""
    cases = []
    for i, (_name, (config, argv)) in enumerate(_SIZE_CASES.items()):
        run = root / f"run{i}"
        copy_run(root / "run", run)
        if config:
            set_config(run, **config)
        cases.append(argv(run, root / "outside"))
    before = snapshot(root)
    results = child_cases(cases, root)
    assert not diff(before, snapshot(root)), diff(before, snapshot(root))
    for name, (code, err), _argv in zip(_SIZE_CASES, results, cases):
        line = one_line(code, err)
        assert "memory" in line or "bound" in line or "beyond" in line, (name, line)


def _archive(root) -> Path:
    path = root / "outside" / "x.pt"
    torch.save({"format": 1}, path)  # replaced below by a copy of a real checkpoint
    path.write_bytes((root / "done" / "last.pt").read_bytes())
    return path


@pytest.mark.parametrize("variant", ["grown", "shrunk", "compressed", "extra-pickle", "huge-declared"])
def test_checkpoint_records_are_checked_before_they_are_inflated(root, capsys, variant):
    path = _archive(root)
    victim = {}

    def fn(name, data):
        if "/data/" in name and not victim:
            victim[name] = True
            if variant == "grown":
                return data + b"\0" * 4096, zipfile.ZIP_STORED
            if variant == "shrunk":
                return data[: len(data) // 2], zipfile.ZIP_STORED
            if variant == "compressed":
                return data, zipfile.ZIP_DEFLATED
        if name.endswith("data.pkl") and variant == "huge-declared":
            return data, zipfile.ZIP_STORED
        return data, zipfile.ZIP_STORED

    rewrite_zip(path, fn)
    if variant == "extra-pickle":
        with zipfile.ZipFile(path, "a") as z:
            z.writestr("other/data.pkl", b"junk")
    if variant == "huge-declared":  # a storage whose pickle declares 10^12 floats
        edit = path.read_bytes()
        with zipfile.ZipFile(path) as z:
            pkl_name = next(n for n in z.namelist() if n.endswith("data.pkl"))
        import pickletools

        with zipfile.ZipFile(path) as z:
            pkl = z.read(pkl_name)
        ops = list(pickletools.genops(pkl))
        # the first storage's numel: the int just before the first BINPERSID's TUPLE
        for i, (op, _arg, _pos) in enumerate(ops):
            if op.name == "BINPERSID":
                j = i - 1
                while ops[j][0].name not in ("BININT1", "BININT2", "BININT", "LONG1"):
                    j -= 1
                op2, arg2, pos2 = ops[j]
                new = b"\x8a\x05" + (10**12).to_bytes(5, "little")  # LONG1
                size = {"BININT1": 2, "BININT2": 3, "BININT": 5}.get(op2.name, 2 + pkl[pos2 + 1])
                pkl = pkl[:pos2] + new + pkl[pos2 + size :]
                break
        rewrite_zip(path, lambda n, d: (pkl if n == pkl_name else d, zipfile.ZIP_STORED))
        assert edit != path.read_bytes()
    line = refused(capsys, root, ["eval", path])
    assert "record" in line or "refused" in line or "archive" in line


def test_an_unchanged_rewritten_archive_still_loads(root, capsys):
    """The control of the test above: the rewrite itself keeps a checkpoint loadable."""
    path = _archive(root)
    rewrite_zip(path, lambda n, d: (d, zipfile.ZIP_STORED))
    assert main(["eval", str(path), "--limit-test", "8"]) == 0, capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# 4. Locks cover every writer; a refusal changes nothing
# ------------------------------------------------------------------------------------------


def _writers(root, target: Path) -> list:
    return [
        ["train", "--resume", target],
        ["train", "--model", "tiny_resnet", "--epochs", "1", "--out", target, *TINY],
        [
            "train",
            "--model",
            "tiny_resnet",
            "--multilevel",
            "1",
            "--refine",
            "2",
            "--epochs",
            "2",
            "--out",
            target,
            *TINY,
        ],
        ["refine", root / "done", "--out", target / "refined.pt", "--no-eval"],
        ["plot", target],
        ["plot", root / "done", "--out", target],
    ]


def test_every_writer_is_refused_by_a_live_run_and_changes_nothing(root, capsys):
    holders = [lock_holder(root / "run", root), lock_holder(root / "ml", root)]
    try:
        for target in (root / "run", root / "ml"):
            for argv in _writers(root, target):
                refused(capsys, root, argv, "another sdenet run")
    finally:
        for h in holders:
            h.kill()
            h.wait()


def test_a_stale_lock_is_taken_over(root, capsys):
    import subprocess

    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # a process that has ended
    dead.wait()
    for run in (root / "run", root / "ml"):
        (run / ".lock").write_text(f"{dead.pid}\n")
    assert main(["train", "--resume", str(root / "run")]) == 0
    assert main(["train", "--resume", str(root / "ml")]) == 0
    assert (root / "ml" / "metrics.json").is_file() and not (root / "ml" / ".lock").exists()


@pytest.mark.parametrize("multilevel", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_two_simultaneous_starts_exactly_one_proceeds(root, multilevel):
    out = root / "same"
    args = ["train", "--model", "tiny_resnet", "--epochs", "2", "--out", out, *TINY]
    if multilevel:
        args += ["--multilevel", "1", "--refine", "2"]
    procs = [child([str(a) for a in args], root, wait=False) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    loser = next(err for c, err in results if c == 2)
    line = one_line(2, "\n".join(s for s in loser.splitlines() if "error" in s))
    assert "another sdenet run" in line or "already holds a run" in line
    assert (out / "metrics.json").is_file()


@pytest.mark.slow
def test_a_live_multilevel_run_survives_a_refused_resume_and_finishes(root):
    """The bug of issue 16: a refused resume deleted a live multilevel run's cycle files."""
    out = root / "live"
    live = child(
        [
            "train",
            "--model",
            "tiny_resnet",
            "--multilevel",
            "1",
            "--refine",
            "2",
            "--epochs",
            "60",
            "--out",
            str(out),
            *TINY,
        ],
        root,
        wait=False,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "cycle0" / "last.pt").exists():
            time.sleep(0.1)
        assert (out / "cycle0" / "last.pt").exists()
        r = child(["train", "--resume", str(out)], root)
        assert "another sdenet run" in one_line(r.returncode, r.stderr)
        r = child(["refine", str(out / "cycle0"), "--out", str(out / "cycle0" / "x.pt"), "--no-eval"], root)
        assert "another sdenet run" in one_line(r.returncode, r.stderr)
        assert live.wait(timeout=600) == 0, live.stderr.read()
    finally:
        if live.poll() is None:
            live.send_signal(signal.SIGKILL)
            live.wait()
    assert (out / "metrics.json").is_file() and not (out / "cycle0" / "x.pt").exists()


# ------------------------------------------------------------------------------------------
# 5. config.json and checkpoint must agree
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value",
    [
        ("model", "tiny_lm_resnet"),
        ("model_overrides", {"refine": 2}),
        ("num_classes", 100),
        ("dataset", "cifar100"),
        ("seed", 7),
    ],
)
@pytest.mark.parametrize("command", ["eval", "resume", "refine", "init"])
def test_a_folder_whose_config_and_checkpoint_disagree_is_refused(root, capsys, key, value, command):
    edit_json(root / "run" / "config.json", lambda d: d.update({key: value}))
    argv = {
        "eval": ["eval", root / "run"],
        "resume": ["train", "--resume", root / "run"],
        "refine": ["refine", root / "run", "--out", root / "outside" / "r.pt"],
        "init": [
            "train",
            "--model",
            "tiny_resnet",
            "--init",
            root / "run",
            "--out",
            root / "new",
            "--epochs",
            "1",
            *TINY,
        ],
    }[command]
    line = refused(capsys, root, argv, "disagree")
    assert key in line


# ------------------------------------------------------------------------------------------
# 6. The last unexpected exits are clear errors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["config"].update(model_overrides=[1, 2]),
        lambda c: c["config"].update(num_classes="ten"),
        lambda c: c["config"].update(resolution=-3),
        lambda c: c.update(config=["not", "a", "dict"]),
        lambda c: c["config"].pop("model"),
        lambda c: c["config"].update(model_overrides={"refine": "x"}),
        lambda c: c["config"].update(model_overrides={"widths": None}),
    ],
)
@pytest.mark.parametrize("command", ["init", "refine"])
def test_malformed_stored_configs_through_init_and_refine(root, capsys, mutate, command):
    path = root / "outside" / "ck.pt"
    path.write_bytes((root / "done" / "last.pt").read_bytes())
    edit_checkpoint(path, mutate)
    argv = {
        "init": [
            "train",
            "--model",
            "tiny_resnet",
            "--init",
            path,
            "--out",
            root / "new",
            "--epochs",
            "1",
            *TINY,
        ],
        "refine": ["refine", path, "--out", root / "outside" / "r.pt"],
    }[command]
    refused(capsys, root, argv, str(path))


@pytest.mark.parametrize(
    "how, needle", [("nan", "nan or infinite"), ("inf", "nan or infinite"), ("huge", "absurd")]
)
def test_eval_says_so_instead_of_printing_a_number_for_broken_weights(root, capsys, how, needle):
    path = root / "outside" / "ck.pt"
    path.write_bytes((root / "done" / "last.pt").read_bytes())

    def mutate(c):
        head = [k for k in c["model"] if k.endswith("weight") and c["model"][k].dim() == 2][-1]
        w = c["model"][head]
        if how == "huge":
            c["model"][head] = w * 1e12
        else:
            w.view(-1)[0] = float(how)

    edit_checkpoint(path, mutate)
    line = refused(capsys, root, ["eval", path])
    assert needle in line.lower() and "%" not in line


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--lr", "1e300"),
        ("--momentum", "1e300"),
        ("--weight-decay", "1e300"),
        ("--dt", "1e300"),
        ("--seed", str(10**30)),
        ("--lr", "1e-400"),
    ],
)
def test_numeric_flags_that_overflow_are_refused(root, capsys, flag, value):
    refused(
        capsys,
        root,
        ["train", "--model", "tiny_resnet", "--epochs", "1", "--out", root / "new", *TINY, flag, value],
        flag.lstrip("-").replace("-", "_").split("_")[0],
    )


@pytest.mark.parametrize(
    "source, line_no, needle",
    [
        ("x = 1\ndef make(:\n    pass\n", 2, "SyntaxError"),
        ("import math\n\nraise RuntimeError('no GPU here')\n", 3, "RuntimeError"),
        ("x = 1\ny = 1 / 0\n", 2, "ZeroDivisionError"),
    ],
)
def test_a_user_module_that_fails_to_import_is_one_line_with_file_and_line(
    root, capsys, source, line_no, needle
):
    name = f"broken_{abs(hash(source)) % 10**8}"
    (root / f"{name}.py").write_text(source)
    line = refused(
        capsys, root, ["train", "--model", f"{name}:make", "--epochs", "1", "--out", root / "new", *TINY]
    )
    assert f"{name}.py:{line_no}" in line and needle in line


def test_a_full_disk_names_the_folder_and_keeps_the_previous_checkpoint(root, capsys, monkeypatch):
    run = root / "run"
    before = (run / "last.pt").read_bytes()
    real = torch.save

    def full(obj, f, *a, **k):
        if hasattr(f, "write"):
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    code = main(["train", "--resume", str(run)])
    monkeypatch.setattr(torch, "save", real)
    line = one_line(code, capsys.readouterr().err)
    assert "disk is full" in line and str(run) in line
    assert (run / "last.pt").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert main(["train", "--resume", str(run)]) == 0  # and the run continues once there is room


def test_a_step_below_working_precision_warns_and_strict_weak_refuses(root, capsys):
    args = ["train", "--model", "tiny_resnet", "--epochs", "1", *TINY, "--dt", "1e-9"]
    refused(capsys, root, [*args, "--out", root / "strict", "--strict-weak"], "identity")
    assert main([*args, "--out", str(root / "warn")]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "identity at working precision" in err


# ------------------------------------------------------------------------------------------
# The same rules through the Python API
# ------------------------------------------------------------------------------------------


def test_the_python_api_refuses_what_the_command_refuses(root):
    from sdenet.commands.refine import refine_checkpoint
    from sdenet.train import evaluate, train
    from sdenet.train.checkpoint import load_checkpoint
    from sdenet.train.multilevel import resume_multilevel, train_multilevel
    from sdenet.train.plots import plot_runs

    edit_json(root / "ml" / "multilevel.json", lambda d: d["cycles"][1].update(dir="../outside"))
    (root / "done" / "errors.png").symlink_to(root / "outside" / "precious.txt")
    copy_run(root / "run", root / "rooted")
    set_config(root / "rooted", data_root=str(root / "outside"))
    copy_run(root / "run", root / "linked")
    (root / "linked" / "metrics.jsonl").unlink()
    (root / "linked" / "metrics.jsonl").symlink_to(root / "outside" / "precious.txt")
    grown = root / "outside" / "grown.pt"
    grown.write_bytes((root / "done" / "last.pt").read_bytes())
    rewrite_zip(grown, lambda n, d: (d + b"\0" * 64 if "/data/0" in n else d, zipfile.ZIP_STORED))
    before = snapshot(root)
    cases = [
        (lambda: evaluate(root / "rooted"), "--data-root"),
        (lambda: train(resume=str(root / "linked"), device="cpu", quiet=True), "symbolic link"),
        (lambda: resume_multilevel(root / "ml"), "leaves the run folder"),
        (lambda: refine_checkpoint(root / "run", os.devnull), "device"),
        (lambda: plot_runs([root / "done"], log=None), "symbolic link"),
        (lambda: load_checkpoint(grown), "record"),
        (lambda: train_multilevel(10**6, model="tiny_resnet", out=root / "new"), "bound"),
        (
            lambda: train(
                model="tiny_resnet",
                dataset="sample",
                overrides={"refine": 10**9},
                out=str(root / "new"),
                device="cpu",
                quiet=True,
            ),
            "memory",
        ),
    ]
    for call, needle in cases:
        with pytest.raises(ValueError, match=needle):
            call()
    assert not diff(before, snapshot(root)), diff(before, snapshot(root))


def test_links_above_a_user_given_folder_are_the_users_choice(root, capsys):
    """A link in the path the user typed (a runs/ folder linked to a bigger disk) is honoured; a
    link at the output itself or inside a run folder is not."""
    (root / "disk").mkdir()
    (root / "runs").symlink_to(root / "disk", target_is_directory=True)
    assert (
        main(["train", "--model", "tiny_resnet", "--epochs", "1", "--out", str(root / "runs" / "a"), *TINY])
        == 0
    )
    assert (root / "disk" / "a" / "last.pt").is_file()
    assert main(["plot", str(root / "done"), "--out", str(root / "runs" / "figs")]) == 0
    assert (root / "disk" / "figs" / "errors.png").is_file()


def test_eval_warns_in_one_line_when_the_loss_is_absurd(root, capsys):
    """Weights below the absurd-weight bound whose logits are still huge (the last layer scaled by
    1e8 / its largest weight): the number is printed with a one-line warning that says so."""
    path = root / "outside" / "ck.pt"
    path.write_bytes((root / "done" / "last.pt").read_bytes())

    def mutate(c):
        head = [k for k in c["model"] if k.endswith("weight") and c["model"][k].dim() == 2][-1]
        f = 0.5e8 / float(c["model"][head].abs().max())
        c["model"][head] = c["model"][head] * f
        c["model"][head.replace("weight", "bias")] = c["model"][head.replace("weight", "bias")] * f

    edit_checkpoint(path, mutate)
    capsys.readouterr()
    assert main(["eval", str(path), "--json"]) == 0
    cap = capsys.readouterr()
    r = json.loads(cap.out)
    warnings = [s for s in cap.err.splitlines() if s.strip()]
    assert r["test_loss"] > 1e6 * 2.31  # the case is what it claims to be
    assert len(warnings) == 1 and "absurd" in warnings[0] and r["warning"]
