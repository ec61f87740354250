"""``nas-grid-scale``: EfficientNet's compound-scaling grid search (φ = 1) and the B1..B7 family.

Step 1: every (α, β, γ) on the grid with ``|α·β²·γ² − 2| ≤ tolerance`` scales the base at φ = 1;
each candidate trains on the proxy task (the trainer and datasets of ``nas-search``) at its own
resolution, in an Optuna study over the candidate grid. The best accuracy wins (ties: fewer MACs).
Step 2: the chosen (or given) α, β, γ scale the base to B1..B7.
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import re
import shlex
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from nas.cli.search import add_proxy_arguments, add_study_arguments, data_config, train_config
from nas.config import ConfigError, config_fields, make_config, mask_url, public_dict, read_config_file

from scaling.compound import Candidate, Coefficients, Grid, cost_candidates
from scaling.search import CandidateTrainer, Evaluate, SearchSettings, choose, run_search, study_settings
from scaling.variants import MODES, PHIS, Variant, make_family, variant_yaml

log = logging.getLogger("nas-grid-scale")
PROG = "nas-grid-scale"
CANDIDATE_COLUMNS = ("index", "alpha", "beta", "gamma", "product", "params", "macs", "macs_ratio", "resolution",
                     "proxy_resolution", "accuracy", "state", "trial", "seconds", "reason")
VARIANT_COLUMNS = ("phi", "mode", "name", "depth", "width", "resolution", "dropout", "drop_connect", "params", "macs",
                   "macs_ratio", "ideal_ratio", "predicted_ratio")


def parse_phis(value: Any) -> tuple[int, ...]:
    """``"1..7"``, ``"1-3"``, ``"1,2,5"``, ``4`` or ``[1, 2]`` -> sorted φ values in 1..7."""
    if isinstance(value, (list, tuple)):
        items: list[Any] = list(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    else:
        text = str(value).strip()
        m = re.fullmatch(r"(\d+)\s*(?:\.\.|-)\s*(\d+)", text)
        items = list(range(int(m.group(1)), int(m.group(2)) + 1)) if m else [s.strip() for s in text.split(",")]
    try:
        phis = sorted({int(x) for x in items})
    except (TypeError, ValueError):
        raise ConfigError(f"--phi must be values in 1..7 like 1..7, 1,2,3 or 4, but got {value!r}") from None
    if not phis or any(p not in PHIS for p in phis):
        raise ConfigError(f"--phi must be values in 1..7 (the official table's B1..B7), but got {value!r}")
    return tuple(phis)


@dataclass(frozen=True)
class GridConfig:
    """Everything ``nas-grid-scale`` needs; field names are the CLI flags with ``-`` -> ``_``.

    The proxy-task and controller fields mean what they mean in ``nas.search.config.SearchConfig``.
    """

    base: str = "efficientnet-b0"
    resolution: int | None = None  # deployment resolution of the base [its own]
    # grid (step 1)
    step: float = 0.05
    max: float = 2.0
    tolerance: float = 0.1
    resolution_multiple: int = 4
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None
    max_candidates: int | None = None
    # family (step 2)
    phi: tuple[int, ...] = PHIS
    mode: str = "compound"
    # proxy task (as nas-search)
    dataset: str = "digits"
    data_dir: str | None = None
    proxy_resolution: int = 32
    val_size: float = 0.1
    train_size: int | None = None
    epochs: float = 1.0
    batch_size: int = 128
    lr: float | None = None
    max_seconds: float | None = None
    device: str = "auto"
    threads: int | None = None
    train: dict = field(default_factory=dict)
    # controller (as nas-search)
    timeout: float | None = None
    pruner: str = "none"  # a grid trains each candidate once; pruning favours fast starters
    seed: int = 0
    storage: str | None = None
    study_name: str = "nas-grid-scale"
    out: str = "runs/nas-grid-scale"
    quiet: bool = False
    dry_run: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "phi", parse_phis(self.phi))
        given = [self.alpha, self.beta, self.gamma]
        checks = [
            ("step", _num(self.step) and self.step > 0, "> 0"),
            ("max", _num(self.max) and self.max >= 1, ">= 1"),
            ("tolerance", _num(self.tolerance) and self.tolerance >= 0, ">= 0"),
            ("resolution_multiple", isinstance(self.resolution_multiple, int) and self.resolution_multiple >= 1,
             ">= 1"),
            ("resolution", self.resolution is None or self.resolution >= 8, ">= 8 pixels"),
            ("max_candidates", self.max_candidates is None or self.max_candidates >= 1, "an integer >= 1"),
            ("mode", self.mode in MODES, f"one of {MODES}"),
            ("pruner", self.pruner in ("hyperband", "median", "none"), "one of hyperband, median, none"),
            ("timeout", self.timeout is None or self.timeout > 0, "> 0 seconds"),
            ("epochs", self.epochs > 0, "> 0"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("proxy_resolution", self.proxy_resolution >= 8, ">= 8 pixels"),
            ("val_size", self.val_size > 0, "> 0 (a fraction < 1 or a count)"),
            ("study_name", bool(self.study_name), "a non-empty name"),
            ("train", isinstance(self.train, dict), "a mapping of trainer settings"),
        ]
        checks += [(n, v is None or (_num(v) and v >= 1), ">= 1 (compound scaling never shrinks)")
                   for n, v in zip(("alpha", "beta", "gamma"), given)]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} must be {expected}, but got {getattr(self, name)!r}")
        if any(v is None for v in given) and any(v is not None for v in given):
            missing = [f"--{n}" for n, v in zip(("alpha", "beta", "gamma"), given) if v is None]
            raise ConfigError(f"--alpha, --beta and --gamma go together, but {', '.join(missing)} missing")

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    @property
    def given(self) -> Coefficients | None:
        return None if self.alpha is None else Coefficients(self.alpha, self.beta, self.gamma)

    @property
    def grid(self) -> Grid:
        return Grid(self.step, self.max, self.tolerance)


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                argument_default=None)
    p.add_argument("--config", help="YAML file of options (keys = flag names); flags override it")
    p.add_argument("--base", help="architecture file (e.g. nas-search's best.yaml) or preset [efficientnet-b0]")
    p.add_argument("--resolution", type=int, help="deployment resolution of the base [the base's own]")
    g = p.add_argument_group("grid search (phi = 1)")
    g.add_argument("--step", type=float, help="grid step of alpha, beta, gamma [0.05]")
    g.add_argument("--max", type=float, help="largest grid value [2.0]")
    g.add_argument("--tolerance", type=float, help="keep |alpha*beta^2*gamma^2 - 2| <= this [0.1]")
    g.add_argument("--resolution-multiple", type=int, help="round scaled resolutions to this multiple [4]")
    g.add_argument("--max-candidates", type=int, help="candidates to train, all workers together [all]")
    g.add_argument("--alpha", type=float, help="skip the search: depth coefficient (with --beta, --gamma)")
    g.add_argument("--beta", type=float, help="width coefficient")
    g.add_argument("--gamma", type=float, help="resolution coefficient")
    g = p.add_argument_group("family")
    g.add_argument("--phi", help="phi values to emit: 1..7, 1,2,3 or 4 [1..7]")
    g.add_argument("--mode", help="compound (alpha^phi, beta^phi, gamma^phi) or official (the published table) "
                                  "[compound]")
    g = p.add_argument_group("proxy task (as nas-search)")
    add_proxy_arguments(g, "candidate", "proxy resolution of the base; a candidate trains at round(this * gamma) [32]")
    g.add_argument("--nproc-per-node", help="processes per candidate, each on its own GPU, trained with DDP "
                                            "(relaunches under torchrun; rank 0 talks to the study) [1]")
    g = p.add_argument_group("controller (as nas-search)")
    g.add_argument("--timeout", type=float, help="wall-clock limit of this worker, seconds")
    g.add_argument("--pruner", help="hyperband, median, none [none]")
    g.add_argument("--seed", type=int, help="[0]")
    add_study_arguments(g, "nas-grid-scale")
    g.add_argument("--dry-run", action="store_true", default=None, help="write candidates.csv and exit")
    g.add_argument("--quiet", action="store_true", default=None, help="no progress lines or tables")
    return p


def parse_config(argv: list[str] | None) -> GridConfig:
    args = vars(build_parser().parse_args(argv))
    path = args.pop("config", None)
    file_values = read_config_file(path, config_fields(GridConfig)) if path else {}
    return make_config(GridConfig, file_values, args)


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in columns} for r in rows)


def _candidate_rows(candidates: Sequence[Candidate], results: dict[int, dict]) -> list[dict]:
    return [{**c.row(), **results.get(c.index, {})} for c in candidates]


def plan_text(cfg: GridConfig, base: Any, candidates: Sequence[Candidate], seconds: float) -> str:
    from search_spaces import count_cost

    cost = count_cost(base)
    grid = cfg.grid
    n = len(grid.values())
    lines = [f"base       {base.name or cfg.base}: {cost.params:,} params, {cost.macs:,} MACs at {base.resolution}px"]
    if cfg.given:
        lines.append(f"given      alpha={cfg.alpha:g} beta={cfg.beta:g} gamma={cfg.gamma:g}, "
                     f"alpha*beta^2*gamma^2 = {cfg.given.product:.4f}")
    else:
        lines.append(f"grid       step {cfg.step:g}, 1..{cfg.max:g} ({n} values, {n ** 3} points), "
                     f"|alpha*beta^2*gamma^2 - 2| <= {cfg.tolerance:g}: {len(candidates)} candidates, "
                     f"enumerated and costed in {seconds:.3f} s")
        budget = min(cfg.max_candidates or len(candidates), len(candidates))
        lines.append(f"proxy      {cfg.dataset}, {cfg.proxy_resolution}px x gamma, {cfg.epochs:g} epoch(s); "
                     f"{budget} candidate(s) to train, timeout {cfg.timeout or 'none'}, pruner {cfg.pruner}")
    ratios = [c.macs_ratio for c in candidates]
    lines.append(f"MACs ratio {min(ratios):.3f} .. {max(ratios):.3f} (ideal 2; rounding moves it)")
    lines.append(f"{'#':>4} {'alpha':>5} {'beta':>5} {'gamma':>5} {'product':>7} {'res':>4} {'params':>11} "
                 f"{'MACs':>14} {'ratio':>6}")
    for c in candidates[:10]:
        k = c.coefficients
        lines.append(f"{c.index:>4} {k.alpha:5.2f} {k.beta:5.2f} {k.gamma:5.2f} {k.product:7.4f} "
                     f"{c.arch.resolution:>4} {c.params:>11,} {c.macs:>14,} {c.macs_ratio:6.3f}")
    if len(candidates) > 10:
        lines.append(f"     ... {len(candidates) - 10} more in candidates.csv (evaluation order)")
    return "\n".join(lines)


def family_table(variants: Sequence[Variant]) -> str:
    lines = [f"{'phi':>3} {'depth':>7} {'width':>7} {'res':>4} {'drop':>4} {'params':>11} {'MACs':>15} "
             f"{'ratio':>8} {'2^phi':>5} {'(abg)^phi':>9}"]
    for v in variants:
        a = v.arch
        pred = "" if v.predicted_ratio is None else f"{v.predicted_ratio:.2f}"
        lines.append(f"{v.phi:>3} {a.depth_mult:7.4g} {a.width_mult:7.4g} {a.resolution:>4} {a.dropout:4.1f} "
                     f"{v.params:>11,} {v.macs:>15,} {v.macs_ratio:8.3f} {v.ideal_ratio:5.0f} {pred:>9}")
    return "\n".join(lines)


def emit(cfg: GridConfig, base: Any, coefficients: Coefficients | None, candidates: Sequence[Candidate],
         results: dict[int, dict], chosen: Candidate | None, seconds: float) -> list[Variant]:
    """Write variants, tables, coefficients.yaml and plots to ``cfg.out_dir``."""
    from search_spaces import count_cost

    from scaling import plots

    out = cfg.out_dir
    variants = make_family(base, cfg.phi, cfg.mode, coefficients, cfg.resolution_multiple)
    (out / "variants").mkdir(parents=True, exist_ok=True)
    for v in variants:
        (out / "variants" / f"b{v.phi}.yaml").write_text(variant_yaml(v, coefficients))
    _write_csv(out / "variants.csv", VARIANT_COLUMNS, [v.row() for v in variants])
    rows = _candidate_rows(candidates, results)
    cost = count_cost(base)
    record = {
        **({"alpha": coefficients.alpha, "beta": coefficients.beta, "gamma": coefficients.gamma,
            "product": round(coefficients.product, 6)} if coefficients else {}),
        "source": "given" if cfg.given else "grid search",
        "chosen": None if chosen is None else {**chosen.row(), **results[chosen.index]},
        "base": {"ref": cfg.base, "name": base.name, "resolution": base.resolution, "params": cost.params,
                 "macs": cost.macs},
        "grid": {"step": cfg.step, "max": cfg.max, "tolerance": cfg.tolerance, "target_product": 2.0,
                 "resolution_multiple": cfg.resolution_multiple, "values": list(cfg.grid.values()),
                 "feasible": len(candidates), "evaluated": sum(1 for r in results.values() if r.get("state")),
                 "enumerate_and_cost_seconds": round(seconds, 4)},
        "proxy": {"dataset": cfg.dataset, "proxy_resolution": cfg.proxy_resolution, "epochs": cfg.epochs,
                  "batch_size": cfg.batch_size, "val_size": cfg.val_size, "train_size": cfg.train_size,
                  "seed": cfg.seed},
        "macs_convention": "fvcore (conv+linear MACs, BN 2/element, adaptive_avg_pool2d 1/element)",
        "candidates": rows,
        "variants": [v.row() for v in variants],
    }
    (out / "coefficients.yaml").write_text(yaml.safe_dump(record, sort_keys=False, default_flow_style=None, width=120))
    plots.plot_candidates(rows, chosen.index if chosen else None, out / "candidates.png")
    plots.plot_variants([v.row() for v in variants], out / "variants.png")
    return variants


def _search(cfg: GridConfig, base: Any, candidates: Sequence[Candidate], train: Any) -> tuple[dict[int, dict], bool, Any]:
    proxy = {k: getattr(cfg, k) for k in ("dataset", "proxy_resolution", "epochs", "val_size", "train_size", "seed")}
    settings = SearchSettings(cfg.study_name, cfg.storage, cfg.out_dir, cfg.pruner, cfg.max_candidates, cfg.timeout,
                              cfg.quiet)
    objective = Evaluate(candidates, train, seed=cfg.seed)
    return run_search(settings, objective, study_settings(base.to_yaml(), candidates, proxy))


def _write_outputs(cfg: GridConfig, base: Any, candidates: Sequence[Candidate], results: dict[int, dict],
                   seconds: float) -> tuple[Coefficients | None, Candidate | None, list[Variant]]:
    """candidates.csv always; with coefficients also the family, coefficients.yaml, plots and manifest."""
    from nas.search.report import write_manifest

    chosen = None if cfg.given else choose(candidates, results)
    coefficients = cfg.given or (chosen.coefficients if chosen else None)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(cfg.out_dir / "candidates.csv", CANDIDATE_COLUMNS, _candidate_rows(candidates, results))
    if coefficients is None:
        return None, None, []
    variants = emit(cfg, base, coefficients, candidates, results, chosen, seconds)
    write_manifest(cfg.out_dir / "manifest.json", public_dict(cfg),
                   {"study_name": cfg.study_name,
                    "storage": mask_url(cfg.storage) if cfg.storage else "journal (default)",
                    "alpha": coefficients.alpha, "beta": coefficients.beta, "gamma": coefficients.gamma})
    return coefficients, chosen, variants


def run(cfg: GridConfig) -> int:
    from search_spaces import resolve_arch

    base = resolve_arch(cfg.base)
    if cfg.resolution is not None:
        base = base.replace(resolution=cfg.resolution)
    t0 = time.perf_counter()
    points = (cfg.given,) if cfg.given else cfg.grid.feasible()
    candidates = cost_candidates(base, points, cfg.resolution_multiple, cfg.proxy_resolution)
    seconds = time.perf_counter() - t0
    if not cfg.given:
        train_config(cfg), data_config(cfg)  # bad proxy options fail before anything is written
    if not cfg.quiet or cfg.dry_run:
        print(plan_text(cfg, base, candidates, seconds))
    if cfg.dry_run:
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        _write_csv(cfg.out_dir / "candidates.csv", CANDIDATE_COLUMNS, _candidate_rows(candidates, {}))
        print(f"dry run: {len(candidates)} candidate(s) in {cfg.out_dir / 'candidates.csv'}; nothing trained")
        return 0
    results, interrupted, lock = {}, False, nullcontext()
    if not cfg.given:
        from nas.cluster.torchrun import Ranks

        trainer = CandidateTrainer(candidates, data_config(cfg), train_config(cfg))
        ranks = Ranks.join(cfg.device)  # under torchrun: rank 0 runs the study, every rank trains
        if not ranks.leader:
            return ranks.follow(trainer)
        t_search = time.perf_counter()
        interrupted = True  # until the search returns: the other ranks may be gone
        try:
            results, interrupted, lock = _search(cfg, base, candidates, ranks.lead(trainer))
        finally:
            if not interrupted:
                ranks.close()
        log.info("grid search: %d candidate(s) evaluated in the study; this worker %.0f s, %d process(es) per "
                 "candidate", len(results), time.perf_counter() - t_search, ranks.world_size)
    with lock:  # workers sharing --out write one at a time; the last one saw every result
        coefficients, chosen, variants = _write_outputs(cfg, base, candidates, results, seconds)
    if coefficients is None:
        print(f"{PROG}: no candidate finished training; run the same command again to resume", file=sys.stderr)
        return 130 if interrupted else 1
    if not cfg.quiet:
        if chosen is not None:
            print(f"\nchosen     alpha={coefficients.alpha:g} beta={coefficients.beta:g} gamma={coefficients.gamma:g} "
                  f"(product {coefficients.product:.4f}, MACs ratio {chosen.macs_ratio:.3f}): accuracy "
                  f"{results[chosen.index]['accuracy']:.4f}, candidate {chosen.index}")
        print(f"\n{cfg.mode} family of {base.name or cfg.base}:\n{family_table(variants)}")
        written = sorted(p.name + ("/" if p.is_dir() else "") for p in cfg.out_dir.iterdir())
        print(f"\noutputs in {cfg.out_dir}/: {', '.join(written)}")
    if interrupted:
        cmd = " ".join(shlex.quote(mask_url(a)) for a in [PROG, *sys.argv[1:]])
        print(f"{PROG}: interrupted; the study is kept. Resume with: {cmd}", file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    from nas.proxy.data import DataError
    from nas.cluster.torchrun import relaunch_under_torchrun, split_nproc, under_torchrun
    from search_spaces import SpecError

    from scaling.compound import ScalingError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            nproc, rest = split_nproc(sys.argv[1:] if argv is None else list(argv))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        cfg = parse_config(rest)
        if cfg.quiet:
            logging.getLogger().setLevel(logging.WARNING)
        if nproc > 1 and not under_torchrun() and not cfg.dry_run and not cfg.given:
            return relaunch_under_torchrun("scaling.cli", nproc, rest)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # preemption ends like Ctrl-C
        return run(cfg)
    except (ConfigError, SpecError, ScalingError, DataError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
