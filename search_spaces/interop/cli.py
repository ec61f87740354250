"""``nas-export``: an architecture (a preset, or a YAML file such as nas-search's best.yaml) as ONNX,
TorchScript, a standalone PyTorch file or a timm arch_def, optionally with trained weights.

    nas-export runs/b0_digits/best.yaml --format onnx --num-classes 10 --resolution 32
    nas-export efficientnet-b3 --format onnx --weights efficientnet-b3-5fb5a3c3.pth   # efficientnet_pytorch file
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

import torch

from nas.cli.common import Parser
from search_spaces.builder import Network, build_model
from search_spaces.files import atomic_write
from search_spaces.interop.export import (
    FORMATS,
    ONNX_OPSET,
    ExportCheckFailed,
    ExportError,
    export_onnx,
    export_torchscript,
)
from search_spaces.interop.standalone import python_source
from search_spaces.interop.timm_def import timm_source
from search_spaces.interop.weights import FORMATS as WEIGHT_FORMATS
from search_spaces.interop.weights import (
    PADDINGS,
    WeightsError,
    from_native,
    has_tf_padding,
    pretrained_model,
    use_tf_padding,
)
from search_spaces.presets import list_presets, resolve_arch
from search_spaces.spec import ArchSpec, SpecError

PROG = "nas-export"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("arch", help="preset name (e.g. efficientnet-b0) or architecture YAML file (e.g. best.yaml)")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="what to write [onnx]")
    p.add_argument("--out", help="output file, or a directory for the default name "
                                 "[<name>.onnx, <name>.torchscript.pt, <name>.py, <name>_timm.py]")
    p.add_argument("--num-classes", type=int, help="classifier outputs [the checkpoint's, else 1000]")
    p.add_argument("--in-chans", type=int, help="input channels [the checkpoint's, else 3]")
    p.add_argument("--resolution", type=int, help="input size of the ONNX/TorchScript example input "
                                                  "[the architecture's own]")
    g = p.add_argument_group("weights")
    g.add_argument("--weights", help="checkpoint file (.pth/.pt/.bin/.safetensors), read with weights_only=True")
    g.add_argument("--weights-format", default="auto", choices=("auto", *WEIGHT_FORMATS),
                   help="the checkpoint's key layout [auto: from its keys]")
    g.add_argument("--padding", default="auto", choices=("auto", *PADDINGS),
                   help="conv padding; auto: the checkpoint library's (same_tf for efficientnet_pytorch; "
                        "pass same_tf for timm tf_efficientnet_* weights) [auto]")
    g.add_argument("--bn-eps", type=float, help="BatchNorm epsilon [the checkpoint library's; 1e-3 for "
                                                "timm tf_efficientnet_*]")
    return p


def _default_name(ref: str, arch: ArchSpec, fmt: str) -> str:
    """The file name for ``fmt`` from the architecture's ``name`` (else the YAML file's), made safe.

    ``name`` comes from a YAML file anyone may have written (a shared ``best.yaml``): only letters,
    digits, ``_``, ``.`` and ``-`` are kept (``../../x`` -> ``x``, ``/etc/x`` -> ``etc_x``), so the
    name is one plain file name and never a path.
    """
    raw = arch.name or (Path(ref).stem if Path(ref).is_file() else "")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("._-")[:100] or "model"
    ident = re.sub(r"\W|^(?=\d)", "_", name)
    return {"onnx": f"{name}.onnx", "torchscript": f"{name}.torchscript.pt", "python": f"{ident}.py",
            "timm": f"{ident}_timm.py"}[fmt]


def _inside(directory: Path, name: str) -> Path:
    """``directory / name``, refused unless it lies directly in ``directory`` (a plain file name)."""
    path = directory / name
    if os.path.dirname(os.path.normpath(os.path.abspath(path))) != os.path.normpath(os.path.abspath(directory)):
        raise ExportError(f"the default file name {name!r} would leave the output directory {str(directory)!r}")
    return path


def _out_paths(args: argparse.Namespace, arch: ArchSpec) -> tuple[Path, Path | None]:
    """The output file, and the weights file written beside a Python one (with ``--weights``)."""
    default = _default_name(args.arch, arch, args.format)
    if args.out is not None and not args.out.strip():
        raise ExportError(f"--out must be a file or folder path, but got {args.out!r}")
    out = Path(args.out) if args.out else _inside(Path("."), default)
    if out.is_dir():
        out = _inside(out, default)
    if not out.parent.is_dir():
        raise ExportError(f"--out directory {str(out.parent)!r} does not exist")
    if args.format in ("python", "timm") and out.suffix != ".py":
        raise ExportError(f"--out for --format {args.format} must be a .py file, but got {str(out)!r}")
    weights_out = out.with_suffix(".pth") if args.weights and args.format in ("python", "timm") else None
    for path in (out, weights_out):
        if path and args.weights and path.resolve() == Path(args.weights).resolve():
            raise ExportError(f"the output {str(path)!r} would overwrite --weights {args.weights!r}: "
                              "choose another --out")
    return out, weights_out


def _check_args(args: argparse.Namespace) -> None:
    for flag, value in (("--num-classes", args.num_classes), ("--in-chans", args.in_chans)):
        if value is not None and value < 1:
            raise ExportError(f"{flag} must be >= 1, but got {value}")
    if args.bn_eps is not None and not args.bn_eps > 0:
        raise ExportError(f"--bn-eps must be > 0, but got {args.bn_eps}")
    if args.weights is None and args.weights_format != "auto":
        raise ExportError(f"--weights-format {args.weights_format} needs --weights FILE")


def make_model(args: argparse.Namespace, arch: ArchSpec) -> Network:
    """The model to export: ``arch``, with the checkpoint loaded when ``--weights`` is given."""
    padding = None if args.padding == "auto" else args.padding
    if args.weights:
        return pretrained_model(arch, args.weights, args.weights_format, num_classes=args.num_classes,
                                in_chans=args.in_chans, padding=padding, bn_eps=args.bn_eps)
    model = build_model(arch if args.bn_eps is None else arch.replace(bn_eps=args.bn_eps),
                        args.num_classes or 1000, args.in_chans or 3)
    if padding == "same_tf":
        use_tf_padding(model)
    return model


def write(fmt: str, model: Network, out: Path, resolution: int, weights_out: Path | None = None) -> list[str]:
    """Write ``model`` as ``fmt`` to ``out`` (and, for python/timm, its weights to ``weights_out``).

    Returns the report lines.
    """
    shape = f"[batch, {model.stem[0].in_channels}, {resolution}, {resolution}]"
    if fmt == "onnx":
        agreement = export_onnx(model, out, resolution)
        check = ("onnxruntime not installed: outputs not checked (pip install onnxruntime)" if agreement is None
                 else "onnxruntime " + agreement.describe())
        return [f"wrote {out}: ONNX opset {ONNX_OPSET}, input 'input' {shape} (dynamic batch), output 'logits'", check]
    if fmt == "torchscript":
        agreement = export_torchscript(model, out, resolution)
        fixed = "; TF padding traced for this resolution only" if has_tf_padding(model) else ""
        return [f"wrote {out}: TorchScript traced at {shape}{fixed}", "reloaded " + agreement.describe()]
    if fmt == "python":
        text, state = python_source(model, out.stem), model.state_dict()
    else:
        text, state = timm_source(model, weights_out.name if weights_out else None), from_native(model, "timm")
    lines = [f"wrote {out}: " + ("standalone PyTorch network (imports torch only)" if fmt == "python"
                                  else "timm ARCH_DEF, MODEL_KWARGS and create_model()")]
    with atomic_write(out) as tmp:
        tmp.write_text(text)
        if weights_out:
            with atomic_write(weights_out) as tmp_weights:
                torch.save(state, tmp_weights)
            layout = "this toolkit's" if fmt == "python" else "timm's"
            lines.append(f"wrote {weights_out}: the weights in {layout} layout")
    return lines


def _arch(ref: str) -> ArchSpec:
    looks_like_name = not Path(ref).exists() and not re.search(r"[/\\:\n]|\.ya?ml$", ref)
    if looks_like_name and ref not in list_presets():
        raise ExportError(f"{ref!r} is neither a preset ({', '.join(list_presets())}) nor an architecture YAML file")
    return resolve_arch(ref)


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    arch = _arch(args.arch)
    if args.resolution is not None:
        arch = arch.replace(resolution=args.resolution)
    out, weights_out = _out_paths(args, arch)
    model = make_model(args, arch)
    for line in write(args.format, model, out, arch.resolution, weights_out):
        print(line)
    eps = model.stem[1].eps
    pad = "TF SAME" if has_tf_padding(model) else "symmetric"
    print(f"weights: {args.weights} ({pad} padding, BatchNorm eps {eps:g})" if args.weights
          else "weights: random (pass --weights FILE for trained ones)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" and the like
    try:
        return run(args)
    except (SpecError, WeightsError, ExportError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except ExportCheckFailed as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk, a read-only folder: nothing is left behind (atomic_write)
        print(f"{PROG}: error: cannot write {exc.filename or args.out or 'the output'}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
