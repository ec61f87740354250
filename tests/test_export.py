"""nas-export: ONNX, TorchScript, standalone Python and timm arch_def; bad input; no partial files."""
from __future__ import annotations

import ast
import copy
import importlib.util
import inspect
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import randomize_

from search_spaces import ArchSpec, StageSpec, build_model, get_preset
from search_spaces.interop import export as export_module
from search_spaces.interop import python_source, timm_arch_def, timm_check, timm_source
from search_spaces.interop.cli import main
from search_spaces.interop.export import ROUNDING_FACTOR, TOLERANCE, ExportCheckFailed, ExportError, check_agreement
from search_spaces.interop.weights import pretrained_model, use_tf_padding

pytestmark = pytest.mark.usefixtures("one_thread")


# A small network with what the presets lack: a regular conv with SE, pooling shortcuts with and without
# projection, activation overrides, no head conv, width and depth multipliers.
CUSTOM = ArchSpec(
    stages=tuple(StageSpec.parse(s) for s in ("cn_r1_k3_s1_e1_c16_se0.25", "ds_r2_k5_s2_e1_c24_nre_poolskip",
                                              "ir_r2_k3_s2_e3_c40_se0.25_nhs_poolskip", "ir_r1_k3_s1_e6_c40_noskip")),
    stem_channels=16, head_channels=0, width_mult=1.1, depth_mult=1.2, act="relu6", name="custom")
TINY_YAML = "name: tiny\nstem_channels: 8\nhead_channels: 32\nstages: [ds_r1_k3_s1_e1_c8, ir_r1_k3_s2_e6_c16_se0.25]\n"

# timm/models/efficientnet.py, _gen_efficientnet (efficientnet_b0) and _gen_mnasnet_a1 (semnasnet_100)
TIMM_ARCH_DEFS = {
    "efficientnet-b0": [["ds_r1_k3_s1_e1_c16_se0.25"], ["ir_r2_k3_s2_e6_c24_se0.25"], ["ir_r2_k5_s2_e6_c40_se0.25"],
                        ["ir_r3_k3_s2_e6_c80_se0.25"], ["ir_r3_k5_s1_e6_c112_se0.25"], ["ir_r4_k5_s2_e6_c192_se0.25"],
                        ["ir_r1_k3_s1_e6_c320_se0.25"]],
    "mnasnet-a1": [["ds_r1_k3_s1_e1_c16_noskip"], ["ir_r2_k3_s2_e6_c24"], ["ir_r3_k5_s2_e3_c40_se0.25"],
                   ["ir_r4_k3_s2_e6_c80"], ["ir_r2_k3_s1_e6_c112_se0.25"], ["ir_r3_k5_s2_e6_c160_se0.25"],
                   ["ir_r1_k3_s1_e6_c320"]],
}


def _inputs(batch: int, resolution: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_cli(argv: list[str]) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:  # argparse errors
        return exc.code


# --- standalone Python ---------------------------------------------------------------------------

@pytest.mark.parametrize("arch, tf_padding", [
    (get_preset("efficientnet-b0"), False), (get_preset("efficientnet-b0"), True), (get_preset("mobilenetv2"), False),
    (get_preset("mnasnet-a1"), False), (CUSTOM, False),
], ids=["b0", "b0-tf-padding", "mobilenetv2", "mnasnet-a1", "custom"])
def test_python_source_equals_builder(tmp_path: Path, arch: ArchSpec, tf_padding: bool) -> None:
    model = build_model(arch, num_classes=10)
    if tf_padding:
        use_tf_padding(model)
    randomize_(model, 0, 48)
    path = tmp_path / "net.py"
    path.write_text(python_source(model, "net"))
    standalone = _import(path).build_model()
    assert list(standalone.state_dict()) == list(model.state_dict())
    standalone.load_state_dict(model.state_dict())
    x = _inputs(2, 48)
    with torch.no_grad():
        expected = model(x)
        assert (expected[0] - expected[1]).abs().max() > 0.1
        assert torch.allclose(standalone.eval()(x), expected, rtol=0, atol=1e-6)


def test_python_source_imports_torch_only() -> None:
    model = build_model(get_preset("efficientnet-b0"))
    use_tf_padding(model)
    tree = ast.parse(python_source(model))
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert roots <= {"__future__", "functools", "typing", "torch"}  # the standard library and torch, nothing else


def test_standalone_network_forward_is_the_builders_own() -> None:
    """One definition of the forward pass: the exported file carries builder.Network's, verbatim."""
    from search_spaces import builder
    from search_spaces.interop import standalone

    text = python_source(build_model(get_preset("efficientnet-b0")))
    for method in (builder.Network.forward, builder.Network.forward_features):
        assert inspect.getsource(method) in text
    assert "def forward" not in inspect.getsource(standalone)  # no second copy kept by hand


def test_standalone_file_reproduces_efficientnet_pytorch_without_the_toolkit(tmp_path: Path) -> None:
    """efficientnet_pytorch weights -> nas-export --format python -> a process that cannot import effnas."""
    ep = pytest.importorskip("efficientnet_pytorch", reason="efficientnet_pytorch is not installed "
                                                            "(pip install efficientnet-pytorch==0.7.1)")
    source = randomize_(ep.EfficientNet.from_name("efficientnet-b0", image_size=64), 0, 64)
    source.set_swish(memory_efficient=False)  # its MemoryEfficientSwish rounds differently in float32
    torch.save(source.state_dict(), tmp_path / "ep.pth")
    x = _inputs(2, 64).double()  # float64: the comparison sees the mapping, not float32 rounding
    with torch.no_grad():
        torch.save({"x": x, "y": source.double()(x)}, tmp_path / "io.pt")
        source.float()
    assert _run_cli(["efficientnet-b0", "--format", "python", "--weights", tmp_path / "ep.pth",
                     "--out", tmp_path / "b0.py"]) == 0
    script = textwrap.dedent(f"""
        import sys
        for name in ("search_spaces", "nas", "scaling", "efficientnet_pytorch"):
            sys.modules[name] = None  # importing any of these now fails
        sys.path.insert(0, {str(tmp_path)!r})
        import torch
        from b0 import build_model
        model = build_model().eval()
        model.load_state_dict(torch.load({str(tmp_path / 'b0.pth')!r}, weights_only=True))
        model.double()
        io = torch.load({str(tmp_path / 'io.pt')!r}, weights_only=True)
        with torch.no_grad():
            print(float((model(io["x"]) - io["y"]).abs().max()))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) <= 1e-5


# --- timm ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", sorted(TIMM_ARCH_DEFS))
def test_timm_arch_def_equals_timms_own(preset: str) -> None:
    assert timm_arch_def(get_preset(preset)) == TIMM_ARCH_DEFS[preset]


def test_timm_arch_def_is_resolved_and_parses() -> None:
    arch_def = timm_arch_def(get_preset("efficientnet-b3"))
    assert arch_def[0] == ["ds_r2_k3_s1_e1_c24_se0.25"] and arch_def[-1] == ["ir_r2_k3_s1_e6_c384_se0.25"]
    assert [StageSpec.parse(s).to_str() for (s,) in arch_def] == [s for (s,) in arch_def]


@pytest.mark.parametrize("stage, message", [
    ("ir_r2_k3_s2_e6_c24_poolskip", "pooling shortcut"),
    ("cn_r1_k3_s1_e1_c24_se0.25", "squeeze-excite after a regular conv"),
    ("ir_r2_k3_s2_e3_c20", "expanded width 60"),  # its second layer: 20 x 3
])
def test_timm_refuses_what_it_would_build_differently(stage: str, message: str) -> None:
    arch = get_preset("efficientnet-b0")
    arch = arch.replace(stages=(arch.stages[0], StageSpec.parse(stage), *arch.stages[2:]))
    with pytest.raises(ExportError, match=message):
        timm_arch_def(arch)


def test_timm_refusal_names_the_timm_space() -> None:
    with pytest.raises(ExportError, match=r"timm cannot build .*stage 2 .*pooling shortcut.*--space mnasnet_timm"):
        timm_arch_def(get_preset("efficientnet-b0").replace(stages=(
            get_preset("efficientnet-b0").stages[0], StageSpec.parse("ir_r2_k3_s2_e6_c24_poolskip"),
            *get_preset("efficientnet-b0").stages[2:])))


def _samples(space, n: int, seed: int = 0) -> list[ArchSpec]:
    rng = random.Random(seed)
    return [space.from_params({k: rng.choice(c) for k, c in space.choices().items()}) for _ in range(n)]


def test_every_architecture_of_the_timm_space_exports_to_timm() -> None:
    """2,000 random members of mnasnet_timm: timm builds each as the toolkit does (docs/export.md)."""
    from search_spaces.interop import layout_problem
    from search_spaces.space import SearchSpace

    timm_space, full = SearchSpace.load("mnasnet_timm"), SearchSpace.load("mnasnet")
    archs = _samples(timm_space, 2000)
    assert [a for a in archs if timm_check(a) or layout_problem(a, "timm")] == []
    assert all(full.contains(a) for a in archs[:200])  # a subspace of the MnasNet space
    assert dict(timm_space.fixed) == dict(full.fixed)
    refused = sum(timm_check(a) is not None for a in _samples(full, 2000))
    assert 1900 <= refused <= 1960  # docs/export.md: 3.3 % of the MnasNet space exports to timm (seed 0)
    assert timm_arch_def(archs[0])  # and the arch_def is written


def test_timm_cli_writes_arch_def_and_timm_layout_weights(tmp_path: Path) -> None:
    model = randomize_(build_model(get_preset("efficientnet-b0")), 0)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    assert _run_cli(["efficientnet-b0", "--format", "timm", "--weights", tmp_path / "w.pth", "--out", tmp_path]) == 0
    text = (tmp_path / "efficientnet_b0_timm.py").read_text()
    namespace: dict = {}
    exec(compile(text, "timm.py", "exec"), namespace)  # defines ARCH_DEF, MODEL_KWARGS, create_model (timm not needed)
    assert namespace["ARCH_DEF"] == TIMM_ARCH_DEFS["efficientnet-b0"]
    assert namespace["MODEL_KWARGS"]["num_features"] == 1280 and namespace["MODEL_KWARGS"]["bn_eps"] == 1e-3
    timm_state = torch.load(tmp_path / "efficientnet_b0_timm.pth", weights_only=True)
    assert "conv_stem.weight" in timm_state and "blocks.1.0.conv_pwl.weight" in timm_state
    back = pretrained_model(get_preset("efficientnet-b0"), timm_state, "timm", bn_eps=1e-3).eval()
    x = _inputs(2, 64)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


def test_timm_source_without_weights() -> None:
    text = timm_source(build_model(ArchSpec.from_yaml(TINY_YAML)))
    assert "pad_type': ''" in text and "create_model" in text and "Weights in timm's layout" not in text


# --- ONNX and TorchScript ------------------------------------------------------------------------------

def test_onnx_cli_dynamic_batch_matches_pytorch(tmp_path: Path, capsys) -> None:
    for package in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(package, reason=f"{package} is not installed (pip install onnx onnxscript onnxruntime)")
    import onnx
    import onnxruntime

    model = randomize_(build_model(get_preset("efficientnet-b0")), 0)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    out = tmp_path / "b0.onnx"
    assert _run_cli(["efficientnet-b0", "--format", "onnx", "--weights", tmp_path / "w.pth", "--resolution", 64,
                     "--out", out]) == 0
    assert "onnxruntime output equals PyTorch's" in capsys.readouterr().out
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic: any batch size
    assert sorted(os.listdir(tmp_path)) == ["b0.onnx", "w.pth"]  # weights inside the one file
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 4):
        x = _inputs(batch, 64, seed=batch + 10)
        (got,) = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            assert (torch.from_numpy(got) - model(x)).abs().max() <= 1e-4


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_cli_reproduces_efficientnet_pytorch(tmp_path: Path) -> None:
    ep = pytest.importorskip("efficientnet_pytorch", reason="efficientnet_pytorch is not installed "
                                                            "(pip install efficientnet-pytorch==0.7.1)")
    source = randomize_(ep.EfficientNet.from_name("efficientnet-b0", image_size=64), 0, 64)
    source.set_swish(memory_efficient=False)
    torch.save(source.state_dict(), tmp_path / "ep.pth")
    out = tmp_path / "b0.pt"
    assert _run_cli(["efficientnet-b0", "--format", "torchscript", "--weights", tmp_path / "ep.pth",
                     "--resolution", 64, "--out", out]) == 0
    traced = torch.jit.load(str(out))
    x = _inputs(3, 64)
    with torch.no_grad():
        expected = source(x)
        assert (traced(x) - expected).abs().max() <= 2e-5 * expected.abs().max()  # float32 rounding


# --- bad input and partial files ----------------------------------------------------------------------

@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    (tmp_path / "typo.yaml").write_text(TINY_YAML.replace("se0.25", "sx0.25"))
    torch.save(build_model(ArchSpec.from_yaml(TINY_YAML)).state_dict(), tmp_path / "tiny.pth")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("argv, message", [
    (["efficientnet-b9"], "'efficientnet-b9' is neither a preset"),
    (["missing.yaml"], "architecture file 'missing.yaml' does not exist"),
    (["typo.yaml"], "bad token 'sx0.25'"),
    (["tiny.yaml", "--format", "bogus"], "invalid choice: 'bogus'"),
    (["tiny.yaml", "--resolution", "4"], "resolution must be >= 8, but got resolution=4"),
    (["tiny.yaml", "--num-classes", "0"], "--num-classes must be >= 1, but got 0"),
    (["tiny.yaml", "--num-classes", "ten"], "invalid int value: 'ten'"),
    (["tiny.yaml", "--bn-eps", "-1"], "--bn-eps must be > 0, but got -1.0"),
    (["tiny.yaml", "--out", "no/such/dir/t.onnx"], "--out directory 'no/such/dir' does not exist"),
    (["tiny.yaml", "--format", "python", "--out", "t.txt"], "must be a .py file, but got 't.txt'"),
    (["tiny.yaml", "--weights", "missing.pth"], "weights file 'missing.pth' does not exist"),
    (["tiny.yaml", "--weights", "tiny.yaml"], "tiny.yaml is not a PyTorch checkpoint"),
    (["tiny.yaml", "--weights-format", "timm"], "--weights-format timm needs --weights FILE"),
    (["tiny.yaml", "--weights", "tiny.pth", "--num-classes", "10"],
     r"shape mismatch at checkpoint tensor 'classifier.weight': (1000, 32) in the checkpoint, (10, 32) in the model"),
    (["tiny.yaml", "--weights", "tiny.pth", "--weights-format", "torchvision"],
     "the torchvision layout cannot express"),
    (["efficientnet-b0", "--weights", "tiny.pth"], "shape mismatch at checkpoint tensor 'stem.0.weight'"),
    (["tiny.yaml", "--format", "python", "--weights", "tiny.pth"], "the output 'tiny.pth' would overwrite --weights"),
])
def test_bad_input_one_line_exit_2_no_output(workdir: Path, capsys, argv: list[str], message: str) -> None:
    before = sorted(os.listdir(workdir))
    assert _run_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas-export: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err
    assert sorted(os.listdir(workdir)) == before


def test_onnx_without_its_packages_is_a_clear_error(workdir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    assert _run_cli(["tiny.yaml", "--format", "onnx"]) == 2
    assert "needs the package onnxscript (pip install onnx onnxscript onnxruntime)" in capsys.readouterr().err
    assert sorted(os.listdir(workdir)) == ["tiny.pth", "tiny.yaml", "typo.yaml"]


def test_module_entry_point_error_has_no_traceback(workdir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "search_spaces.interop.cli", "efficientnet-b9"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_failed_check_leaves_no_file(workdir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)  # every check fails
    assert _run_cli(["tiny.yaml", "--format", "torchscript", "--resolution", "32"]) == 1
    assert "differs from PyTorch" in capsys.readouterr().err
    assert sorted(os.listdir(workdir)) == ["tiny.pth", "tiny.yaml", "typo.yaml"]


def test_agreement_accepts_float32_rounding_only() -> None:
    model = randomize_(build_model(ArchSpec.from_yaml(TINY_YAML)), 0, 32)
    with torch.no_grad():
        model.classifier.weight.mul_(1e7)  # logits near 1e7, where float32 rounding alone is about 1
    exact = copy.deepcopy(model).double()
    agreement = check_agreement(model, lambda x: exact(x.double()).float(), 32, "float64, rounded")
    assert agreement.max_diff > TOLERANCE and agreement.export_error <= ROUNDING_FACTOR * agreement.torch_error
    assert "amplifies float32 rounding" in agreement.describe()
    with pytest.raises(ExportCheckFailed, match="off by 0.1%.*over 10x PyTorch's own float32 error"):
        check_agreement(model, lambda x: model(x) * 1.001, 32, "off by 0.1%")


def test_crash_while_writing_leaves_no_file(workdir: Path, monkeypatch) -> None:
    def broken_save(obj, path):
        Path(path).write_bytes(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        main(["tiny.yaml", "--format", "python", "--weights", "tiny.pth", "--out", "net.py"])
    assert sorted(os.listdir(workdir)) == ["tiny.pth", "tiny.yaml", "typo.yaml"]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_default_names_and_summary(workdir: Path, capsys) -> None:
    assert _run_cli(["tiny.yaml", "--format", "python"]) == 0
    assert _run_cli(["tiny.yaml", "--format", "torchscript", "--resolution", "32", "--in-chans", "1",
                     "--num-classes", "7"]) == 0
    out = capsys.readouterr().out
    assert "wrote tiny.py" in out and "wrote tiny.torchscript.pt: TorchScript traced at [batch, 1, 32, 32]" in out
    assert "weights: random" in out
    traced = torch.jit.load("tiny.torchscript.pt")
    assert traced(torch.randn(5, 1, 40, 40)).shape == (5, 7)  # symmetric padding: any batch, any resolution


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/effnas-absolute-name", "..", "a/../../b"])
def test_the_architecture_name_never_picks_where_files_go(tmp_path: Path, monkeypatch, name: str) -> None:
    """A shared best.yaml with ``name: ../../x`` or an absolute path: every file stays inside --out."""
    work = tmp_path / "a" / "b"
    (work / "out").mkdir(parents=True)
    (work / "arch.yaml").write_text(TINY_YAML.replace("name: tiny", f"name: {name!r}"))
    monkeypatch.chdir(work)
    before = {p for p in tmp_path.rglob("*")}
    for fmt in ("python", "torchscript"):
        assert _run_cli(["arch.yaml", "--format", fmt, "--resolution", "32", "--out", "out"]) == 0
    assert _run_cli(["arch.yaml", "--format", "python"]) == 0  # no --out: the current directory
    new = {p for p in tmp_path.rglob("*")} - before
    assert new and all(p.parent in (work / "out", work) for p in new), sorted(map(str, new))
    assert len([p for p in new if p.parent == work / "out"]) == 2 and not Path("/tmp/effnas-absolute-name.py").exists()


@pytest.mark.parametrize("fmt, name", [("onnx", "b0.onnx"), ("torchscript", "b0.pt")])
def test_an_export_to_a_full_disk_is_one_line_and_leaves_nothing(small_tmpfs, fmt, name):
    """B0 (21 MB) into a 1 MiB tmpfs: exit 2, one line, no .partial (torch.jit.save to a path would abort)."""
    done = subprocess.run([sys.executable, "-m", "search_spaces.interop.cli", "efficientnet-b0", "--format", fmt,
                           "--out", str(small_tmpfs / name)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == f"nas-export: error: cannot write {small_tmpfs / name}: No space left on device"
    assert list(small_tmpfs.iterdir()) == []
