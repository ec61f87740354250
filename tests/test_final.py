"""nas-train (nas.final): the test split read only here, the recipe, EMA, resuming checkpoints, outputs, bad input."""
from __future__ import annotations

import gzip
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from nas.cli import train as cli
from nas.final import (
    FinalConfig,
    RMSpropTF,
    WeightEMA,
    crop_flip,
    default_resolution,
    load_final_data,
    make_augment,
    make_optimizer,
    make_recipe,
    make_schedule,
    rand_augment,
    read_weights,
    train_final,
)
from nas.proxy import DATASET_REGISTRY, TrainConfig, evaluate
from nas.proxy.readers import digits_test_index, read_digits, read_idx_test
from search_spaces import build_model, get_preset, load_arch

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")
TINY = """name: tiny
stem_channels: 8
stages: [ds_r1_k3_s1_e1_c8, ir_r1_k3_s2_e3_c16_se0.25, ir_r2_k5_s2_e3_c24_se0.25]
head_channels: 64
dropout: 0.1
drop_connect: 0.1
"""
# digits at 16 px, 256 training images, batches of 32: 8 steps an epoch, about a second of CPU for 3 epochs
QUICK = ["--resolution", "16", "--train-size", "256", "--batch-size", "32", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "tiny.yaml"
    path.write_text(TINY)
    return path


def quick_cfg(**kw: object) -> FinalConfig:
    values: dict[str, object] = dict(resolution=16, train_size=256, batch_size=32, threads=1, epochs=3.0)
    values.update(kw)
    return FinalConfig(**values)  # type: ignore[arg-type]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------------------ the test splits
def test_test_split_readers_and_the_fixed_digits_carve() -> None:
    images, labels = read_idx_test(FMNIST)
    assert images.shape == (10000, 1, 28, 28) and images.dtype == np.uint8 and labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [1000] * 10  # Fashion-MNIST's test split: 1,000 per class
    index = digits_test_index()
    digits_labels = read_digits()[1]
    assert len(index) == 359 and np.array_equal(index, digits_test_index())  # 20 % of 1,797, the same every time
    counts = np.bincount(digits_labels[index])
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: each class gives ~20 % of its ~180
    for name in ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder"):
        assert DATASET_REGISTRY[name].read_test is not None, name
    assert DATASET_REGISTRY["synthetic"].read_test is None


def test_final_data_trains_on_the_rest_and_scores_on_test() -> None:
    data = load_final_data(FinalConfig(resolution=16), 16)
    assert (data.num_train, data.num_test, data.heldout) == (1797 - 359, 359, None)
    train_index = data.task.train.source_index  # type: ignore[union-attr]
    assert len(np.intersect1d(train_index, digits_test_index())) == 0
    held = load_final_data(FinalConfig(resolution=16, val_size=0.25), 16)
    assert held.heldout is not None and (held.num_train, held.heldout.num_val) == (1438 - 360, 360)
    fm = load_final_data(FinalConfig(dataset="fashion-mnist", resolution=32, train_size=1000), 32)
    assert (fm.num_train, fm.num_test) == (1000, 10000)


def test_default_resolution_scales_the_architectures_own() -> None:
    sizes = {f"b{i}": default_resolution(get_preset(f"efficientnet-b{i}"), "fashion-mnist") for i in range(4)}
    assert sizes == {"b0": 32, "b1": 36, "b2": 36, "b3": 44}  # 224, 240, 260, 300 px x 32/224, multiples of 4
    assert default_resolution(get_preset("efficientnet-b2"), "imagefolder") == 260


# ------------------------------------------------------------------------------------------ the recipe
def test_rmsprop_tf_matches_the_tf_update_by_hand() -> None:
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = RMSpropTF([w], lr=0.1, alpha=0.9, eps=1e-3, momentum=0.9, weight_decay=0.0)
    ms, mom, ref = np.ones(2), np.zeros(2), np.array([1.0, -2.0])
    for g in ([0.5, -1.0], [0.2, 0.3]):
        w.grad = torch.tensor(g)
        opt.step()
        g_ = np.array(g)
        ms = 0.9 * ms + 0.1 * g_ ** 2  # TF: the mean square starts at 1
        mom = 0.9 * mom + 0.1 * g_ / np.sqrt(ms + 1e-3)  # eps inside the root, lr inside the momentum
        ref = ref - mom
        assert np.allclose(w.detach().numpy(), ref, atol=1e-7)


def test_the_papers_recipe_settings(tiny: Path) -> None:
    arch = load_arch(tiny)
    recipe = make_recipe(FinalConfig(batch_size=256), arch, 32, "crop")
    assert (recipe.lr, recipe.weight_decay, recipe.label_smoothing, recipe.ema_decay) == (0.016, 1e-5, 0.1, 0.9999)
    assert make_recipe(FinalConfig(batch_size=4096), arch, 32, "").lr == pytest.approx(0.256)  # the paper's lr
    assert (recipe.dropout, recipe.drop_connect, recipe.bn_momentum_tf) == (0.1, 0.1, 0.99)  # the spec's
    opt = make_optimizer(build_model(arch, 10), recipe)
    assert isinstance(opt, RMSpropTF)
    decayed, bn = opt.param_groups
    assert all((g["alpha"], g["momentum"], g["eps"]) == (0.9, 0.9, 1e-3) for g in opt.param_groups)
    assert (decayed["weight_decay"], bn["weight_decay"]) == (1e-5, 0.0)
    assert all(p.ndim == 1 for p in bn["params"]) and any(p.ndim == 1 for p in decayed["params"])  # biases decay
    sgd = make_optimizer(build_model(arch, 10), make_recipe(FinalConfig(recipe="sgd"), arch, 32, ""))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"] and sgd.defaults["lr"] == 0.05


def test_schedules_warm_up_then_decay_as_documented(tiny: Path) -> None:
    arch = load_arch(tiny)
    rms = make_schedule(make_recipe(FinalConfig(epochs=10, lr=1.0), arch, 32, ""))(10, 100)  # warm-up 1 epoch
    assert [rms(0), rms(4), rms(9), rms(10)] == pytest.approx([0.1, 0.5, 1.0, 1.0])
    assert rms(99) == pytest.approx(0.97 ** (350 / 2.4))  # the paper's final fraction of the peak, 1.2 %
    assert rms(10 + 89 // 2) == pytest.approx(math.sqrt(0.97 ** (350 / 2.4)), rel=0.05)  # exponential
    cos = make_schedule(make_recipe(FinalConfig(recipe="sgd", epochs=10, lr=1.0), arch, 32, ""))(10, 100)
    assert [cos(10), cos(55), cos(99)] == pytest.approx([1.0, 0.5, 0.0], abs=1e-3)


def test_training_uses_the_recipe(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The optimizer the trainer steps is the paper's and the loss is label-smoothed by 0.1."""
    import nas.final.run as run

    seen: dict[str, object] = {}
    smoothing: set[float] = set()
    make, ce = run.make_optimizer, torch.nn.functional.cross_entropy

    def record_optimizer(model: nn.Module, recipe: object) -> torch.optim.Optimizer:
        seen["optimizer"] = make(model, recipe)  # type: ignore[arg-type]
        return seen["optimizer"]  # type: ignore[return-value]

    def record_loss(*args: object, **kw: object) -> torch.Tensor:
        if kw.get("reduction", "mean") == "mean":
            smoothing.add(float(kw.get("label_smoothing", 0.0)))  # type: ignore[arg-type]
        return ce(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(run, "make_optimizer", record_optimizer)
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", record_loss)
    metrics = train_final(load_arch(tiny), quick_cfg(epochs=1), tmp_path / "run")
    opt = seen["optimizer"]
    assert isinstance(opt, RMSpropTF) and opt.state  # it was stepped
    assert smoothing == {0.1}
    recipe = metrics["recipe"]
    assert isinstance(recipe, dict) and (recipe["rmsprop_decay"], recipe["momentum"], recipe["eps"]) == (0.9, 0.9, 1e-3)


# ------------------------------------------------------------------------------------------ EMA
def test_ema_follows_the_tf_formula_by_hand() -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    ema = WeightEMA(model, 0.9999)
    expected = np.array([1.0, 2.0])
    for n, w in enumerate(([3.0, -1.0], [0.0, 4.0]), start=1):
        with torch.no_grad():
            model.weight.copy_(torch.tensor([w]))
        ema.update(model)
        d = min(0.9999, (1 + n) / (10 + n))  # 2/11, then 3/12
        expected = d * expected + (1 - d) * np.array(w)
        assert np.allclose(ema.model.weight.detach().numpy()[0], expected, atol=1e-6)
    assert ema.decay_at(10**6) == 0.9999 and ema.decay_at(80) == pytest.approx(0.9)


def test_saved_weights_are_the_average_and_reload_to_the_same_outputs(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    metrics = train_final(load_arch(tiny), quick_cfg(), out)
    weights = read_weights(out / "model.safetensors")
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    raw, averaged = ckpt["model"], ckpt["ema"]["model"]
    names = [n for n, _ in build_model(load_arch(tiny), 10).named_parameters()]
    assert all(torch.equal(weights[n], averaged[n]) for n in names)  # the average's parameters ...
    assert sum(not torch.allclose(weights[n], raw[n]) for n in names) > len(names) // 2  # ... not the raw ones
    model = build_model(load_arch(out / "arch.yaml"), int(metrics["num_classes"]))  # type: ignore[call-overload]
    model.load_state_dict(weights)
    again = build_model(load_arch(out / "arch.yaml"), 10)
    again.load_state_dict(read_weights(out / "model.safetensors"))
    data = load_final_data(quick_cfg(), 16)
    x, _ = next(data.task.batches("val", 64))
    model.eval(), again.eval()
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    # the reloaded model, its BatchNorm statistics as saved (no recalibration), scores what nas-train reported
    top1, _, _ = evaluate(model, data.task, TrainConfig(bn_recalibrate_batches=0, batch_size=64),
                          device=torch.device("cpu"))
    assert top1 == pytest.approx(metrics["test_top1"], abs=1e-9)


# ------------------------------------------------------------------------------------------ augmentation
def _windows(image: torch.Tensor, pad: int) -> list[torch.Tensor]:
    padded = torch.nn.functional.pad(image, (pad,) * 4)
    h, w = image.shape[-2:]
    return [padded[:, y:y + h, x:x + w] for y in range(2 * pad + 1) for x in range(2 * pad + 1)]


@pytest.mark.parametrize("dataset, mirrored", [("digits", False), ("mnist", False), ("fashion-mnist", True)])
def test_crop_and_flip_are_windows_of_the_padded_image(dataset: str, mirrored: bool) -> None:
    images = torch.from_numpy(read_digits()[0][:48]).repeat_interleave(2, -1).repeat_interleave(2, -2)  # 16 px
    out = make_augment(dataset, "arrays", 16, seed=0)(0, 0, torch.device("cpu"))(images)
    assert out.shape == images.shape and out.dtype == torch.uint8
    flipped = 0
    for image, got in zip(images, out):
        plain = any(torch.equal(got, w) for w in _windows(image, 2))
        mirror = any(torch.equal(got, w) for w in _windows(image.flip(-1), 2))
        assert plain or mirror
        flipped += mirror and not plain
    assert (flipped > 0) == mirrored  # a mirrored digit is another symbol: never for digits and MNIST
    again = make_augment(dataset, "arrays", 16, seed=0)(0, 0, torch.device("cpu"))(images)
    other_epoch = make_augment(dataset, "arrays", 16, seed=0)(1, 0, torch.device("cpu"))(images)
    assert torch.equal(out, again) and not torch.equal(out, other_epoch)  # seeded by (seed, epoch, rank)
    assert torch.equal(crop_flip(images, 0, False, torch.Generator()), images)


def test_rand_augment_changes_images_within_range() -> None:
    images = torch.randint(0, 256, (64, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = rand_augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    changed = (out != images).flatten(1).any(1).float().mean().item()
    assert 0.5 < changed < 1.0  # 2 ops at p 1/2 each: ~3/4 of the images change (some ops leave noise alone)
    assert torch.equal(out, rand_augment(images, torch.Generator().manual_seed(0)))


# ------------------------------------------------------------------------------------------ the command
@pytest.mark.parametrize("args, fragment", [
    (["efficientnet-b9"], "unknown preset 'efficientnet-b9'"),
    (["missing/arch.yaml"], "no such file"),
    (["TINY", "--epochs", "0"], "--epochs must be > 0, but got 0"),
    (["TINY", "--resolution", "4"], "--resolution must be a whole number >= 8 pixels, but got 4"),
    (["TINY", "--recipe", "adam"], "--recipe must be one of rmsprop, sgd"),
    (["TINY", "--dataset", "synthetic"], "has no test split"),
    (["TINY", "--dataset", "fashion-mnist", "--data-dir", "/nonexistent"], "/nonexistent"),
    (["TINY", "--batch-size", "5000"], "--batch-size 5000 exceeds the 256 training images"),
    (["TINY", "--val-size", "1438"], "--val-size 1438 leaves 1438 of 1438"),
    (["TINY", "--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(args: list[str], fragment: str, tiny: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    # QUICK first: a flag given twice takes its last value, so the bad one must come after it
    argv = [*QUICK, *(str(tiny) if a == "TINY" else a for a in args), "--out", str(out)]
    code, stdout, stderr = run_cli(argv, capsys)
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("nas-train: error: ") and fragment in stderr
    assert not out.exists()


def test_out_that_is_a_file_or_a_foreign_folder_is_refused(tiny: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    code, _, stderr = run_cli([str(tiny), "--out", str(afile), *QUICK], capsys)
    assert code == 2 and "is a file" in stderr and len(stderr.splitlines()) == 1 and afile.read_text() == "mine"
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8")
    code, _, stderr = run_cli([str(tiny), "--out", str(folder), *QUICK], capsys)
    assert code == 2 and "holds no nas-train run" in stderr and sorted(os.listdir(folder)) == ["cat.jpg"]


def test_a_real_subprocess_gives_exit_2_and_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "nas.cli.train", "efficientnet-b0", "--out", str(tmp_path / "r"),
                           "--epochs", "0"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == "nas-train: error: --epochs must be > 0, but got 0.0"
    assert not (tmp_path / "r").exists()


def test_finished_run_reruns_without_training_and_other_settings_are_refused(
        tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    argv = [str(tiny), "--out", str(out), "--epochs", "2", *QUICK]
    code, first, _ = run_cli(argv, capsys)
    assert code == 0 and "test top-1" in first
    metrics = json.loads((out / "metrics.json").read_text())
    expected = {"test_top1", "test_top5", "heldout_top1", "macs", "macs_224", "params", "epochs", "images",
                "seconds", "resolution", "recipe", "arch", "dataset", "finished"}
    assert expected <= set(metrics) and metrics["finished"] is True and metrics["heldout_top1"] is None
    assert (metrics["epochs"], metrics["images"], metrics["resolution"]) == (2.0, 2 * 8 * 32, 16)
    assert metrics["arch"] == "tiny" and metrics["num_test"] == 359
    for name in ("model.safetensors", "arch.yaml", "curves.png", "model-card.md", "manifest.json", "checkpoint.pt"):
        assert (out / name).is_file(), name
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    import nas.final.run as run

    monkeypatch.setattr(run, "train_proxy", lambda *a, **k: pytest.fail("a finished run trained again"))
    code, again, stderr = run_cli(argv, capsys)
    assert code == 0 and again == first and "nothing to train" in stderr
    code, _, stderr = run_cli([str(tiny), "--out", str(out), "--epochs", "3", *QUICK], capsys)
    assert code == 2 and "other settings (epochs 2.0, now 3.0)" in stderr and len(stderr.splitlines()) == 1
    code, _, stderr = run_cli([str(tiny), "--out", str(out), "--epochs", "2", "--recipe", "sgd", *QUICK], capsys)
    assert code == 2 and "other settings" in stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps  # nothing touched


def test_interrupted_run_keeps_its_checkpoint_and_resumes(tiny: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import nas.final.checkpoint as checkpoint
    import nas.final.run as run

    out = tmp_path / "run"
    argv = [str(tiny), "--out", str(out), "--epochs", "3", *QUICK]
    save = checkpoint.save_checkpoint

    def save_then_stop(path: Path, state: dict[str, object]) -> None:
        save(path, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(run, "save_checkpoint", save_then_stop)
    code, _, stderr = run_cli(argv, capsys)
    assert code == 130 and "Resume with: nas-train" in stderr and not (out / "metrics.json").exists()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2
    code, _, stderr = run_cli([str(tiny), "--out", str(out), "--epochs", "4", *QUICK], capsys)
    assert code == 2 and "unfinished run with other settings (epochs 3.0, now 4.0)" in stderr
    monkeypatch.setattr(run, "save_checkpoint", save)
    code, _, stderr = run_cli(argv, capsys)
    assert code == 0 and "resuming after epoch 2 of 3" in stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_epochs"] == [2] and [r["epoch"] for r in metrics["history"]] == [1.0, 2.0, 3.0]
    assert metrics["images"] == 3 * 8 * 32


def test_held_out_part_is_scored_every_epoch_and_sgd_runs(tiny: Path, tmp_path: Path) -> None:
    metrics = train_final(load_arch(tiny), quick_cfg(val_size=0.2, recipe="sgd", epochs=2), tmp_path / "run")
    assert metrics["num_heldout"] == round(0.2 * 1438) and metrics["num_train"] == 256
    history = metrics["history"]
    assert isinstance(history, list) and all(0 <= r["heldout_top1"] <= 1 for r in history)
    assert metrics["heldout_top1"] == history[-1]["heldout_top1"]
    assert metrics["recipe"]["optimizer"] == "sgd-nesterov"  # type: ignore[index]


def test_image_folder_trains_on_train_and_scores_on_val(tiny: Path, tmp_path: Path) -> None:
    from PIL import Image

    images, labels = read_digits()
    root = tmp_path / "folders"
    for split, index in (("train", range(0, 300)), ("val", range(300, 400))):
        for i in index:
            folder = root / split / f"c{labels[i]}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i, 0]).resize((20, 20)).save(folder / f"{i}.png")
    metrics = train_final(load_arch(tiny), quick_cfg(dataset="imagefolder", data_dir=str(root), epochs=1,
                                                     train_size=None), tmp_path / "run")
    assert (metrics["num_train"], metrics["num_test"], metrics["num_classes"]) == (300, 100, 10)
    assert "RandAugment" in metrics["recipe"]["augmentation"]  # type: ignore[index]


# ------------------------------------------------------------------------------------------ SIGKILL, then resume
def _epoch_of(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except Exception:  # noqa: BLE001 -- not there yet
        return 0


def test_sigkill_mid_run_then_rerun_resumes_where_it_stopped(tiny: Path, tmp_path: Path) -> None:
    epochs = 40
    argv = [sys.executable, "-m", "nas.cli.train", str(tiny), "--epochs", str(epochs), *QUICK]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*argv, "--out", str(killed)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while _epoch_of(killed / "checkpoint.pt") < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (killed / "metrics.json").exists()
    k = _epoch_of(killed / "checkpoint.pt")
    assert 0 < k < epochs
    rerun = subprocess.run([*argv, "--out", str(killed)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming after epoch {k} of {epochs}" in rerun.stderr
    metrics = json.loads((killed / "metrics.json").read_text())
    assert metrics["resumed_from_epochs"] == [k] and metrics["images"] == epochs * 8 * 32
    assert [r["epoch"] for r in metrics["history"]] == [float(e) for e in range(1, epochs + 1)]
    # it continued rather than restarted: the resumed run ends where an uninterrupted one does, to the bit
    whole = subprocess.run([*argv, "--out", str(tmp_path / "whole")], cwd=ROOT, capture_output=True, timeout=600)
    assert whole.returncode == 0
    a, b = read_weights(killed / "model.safetensors"), read_weights(tmp_path / "whole" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    assert metrics["test_top1"] == json.loads((tmp_path / "whole" / "metrics.json").read_text())["test_top1"]


# ------------------------------------------------------------------------------------------ test-split isolation
AUDIT = """import runpy, sys
opened = []
def hook(event, args):
    if event == "open":
        opened.append(str(args[0]))
sys.addaudithook(hook)
log, module = sys.argv[1], sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
try:
    runpy.run_module(module, run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
with open(log, "w") as f:
    f.write("\\n".join(opened))
sys.exit(code)
"""


def _small_fashion_mnist(folder: Path, train: int = 600, test: int = 200) -> Path:
    """The first images of the real Fashion-MNIST, train and t10k, as IDX files (a second to read, not ten)."""
    import struct

    folder.mkdir()
    for split, count in (("train", train), ("t10k", test)):
        images = gzip.decompress((FMNIST / f"{split}-images-idx3-ubyte.gz").read_bytes())
        labels = gzip.decompress((FMNIST / f"{split}-labels-idx1-ubyte.gz").read_bytes())
        (folder / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, count, 28, 28)
                                                            + images[16:16 + count * 784])
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, count) + labels[8:8 + count])
    return folder


def _opened(tmp_path: Path, name: str, module: str, args: list[str]) -> list[str]:
    script, log = tmp_path / "audit.py", tmp_path / f"{name}.opened"
    script.write_text(AUDIT)
    proc = subprocess.run([sys.executable, str(script), str(log), module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return log.read_text().splitlines()


@pytest.mark.slow
def test_only_nas_train_opens_a_test_split(tiny: Path, tmp_path: Path) -> None:
    data = _small_fashion_mnist(tmp_path / "fmnist")
    task = ["--dataset", "fashion-mnist", "--data-dir", str(data), "--proxy-resolution", "16", "--train-size", "128",
            "--batch-size", "32", "--threads", "1"]
    commands = {
        "nas-search": ("nas.cli.search", ["--trials", "2", "--epochs", "0.25", "--seed-arch", "efficientnet-b0",
                                          "--quiet", *task]),
        "nas-grid-scale": ("scaling.cli", ["--base", str(tiny), "--epochs", "0.25", "--step", "0.2", "--max", "1.4",
                                           "--max-candidates", "2", "--phi", "1", "--quiet", *task]),
        "nas-proxy-check": ("nas.cli.proxy_check", ["--archs", "3", "--proxies", "zc:synflow",
                                                    "--reference-epochs", "0.25", "--reference-seeds", "1", *task]),
    }
    for name, (module, args) in commands.items():
        opened = _opened(tmp_path, name, module, [*args, "--out", str(tmp_path / name)])
        assert any("train-images-idx3-ubyte" in p for p in opened), name  # the hook sees the data being read
        assert not [p for p in opened if "t10k" in p], name
    opened = _opened(tmp_path, "nas-train", "nas.cli.train", [str(tiny), "--out", str(tmp_path / "train"),
                                                              "--dataset", "fashion-mnist", "--data-dir", str(data),
                                                              "--epochs", "1", "--quiet", *QUICK])
    assert any("t10k-images-idx3-ubyte" in p for p in opened) and any("t10k-labels" in p for p in opened)
    assert json.loads((tmp_path / "train" / "metrics.json").read_text())["num_test"] == 200
