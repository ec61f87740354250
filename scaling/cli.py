"""``nas-grid-scale``: EfficientNet's compound-scaling grid search (φ = 1) and the B1..B7 family.

Step 1: every (α, β, γ) on the grid with ``|α·β²·γ² − 2| ≤ tolerance`` scales the base at φ = 1;
each candidate trains on the proxy task (the trainer and datasets of ``nas-search``) at its own
resolution, in an Optuna study over the candidate grid. The best accuracy wins (ties: fewer MACs).
Step 2: the chosen (or given) α, β, γ scale the base to B1..B7.
"""
from __future__ import annotations

import logging
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Sequence

from nas.cli import common  # the parts every study command shares
from nas.cluster.storage import dashboard_line
from nas.config import ConfigError, choices_help, config_fields, make_config, read_config_file
from nas.search.config import PRUNERS
from scaling.compound import Candidate, cost_candidates
from scaling.config import GridConfig, parse_phis
from scaling.outputs import CANDIDATE_COLUMNS, candidate_rows, family_table, plan_text, write_csv, write_outputs
from scaling.search import CandidateTrainer, Evaluate, SearchSettings, run_search, study_settings
from search_spaces import ArchSpec

__all__ = ["PROG", "GridConfig", "parse_phis", "build_parser", "parse_config", "run", "main"]

log = logging.getLogger("nas-grid-scale")
PROG = "nas-grid-scale"
Results = dict[int, dict]


def build_parser() -> common.Parser:
    p = common.command_parser(PROG, __doc__)
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
    g = p.add_argument_group("proxy task (as nas-search)", "--proxy-resolution is the base's; a candidate trains at "
                                                           "round(proxy resolution * gamma)")
    common.add_proxy_arguments(g)
    g.add_argument("--nproc-per-node", help="processes per candidate, each on its own GPU, trained with DDP "
                                            "(relaunches under torchrun; rank 0 talks to the study) [1]")
    g = p.add_argument_group("controller (as nas-search)")
    g.add_argument("--timeout", type=float, help="wall-clock limit of this worker, seconds")
    g.add_argument("--pruner", help=choices_help(PRUNERS, "none"))
    g.add_argument("--seed", type=int, help="[0]")
    common.add_study_arguments(g, PROG)
    g.add_argument("--dry-run", action="store_true", default=None, help="write candidates.csv and exit")
    g.add_argument("--quiet", action="store_true", default=None, help="no progress lines or tables")
    return p


def parse_config(argv: Sequence[str]) -> GridConfig:
    """The flags (over ``--config``'s YAML) as a validated ``GridConfig``.

    Raises:
        ConfigError: a bad value, named with what was expected.
    """
    parser = build_parser()
    args = vars(parser.parse_args(common.glue_negative_values(parser, argv)))
    path = args.pop("config", None)
    file_values = read_config_file(path, config_fields(GridConfig)) if path else {}
    config: GridConfig = make_config(GridConfig, file_values, args)
    return config


def _search(cfg: GridConfig, base: ArchSpec,
            candidates: Sequence[Candidate]) -> tuple[Results, bool, AbstractContextManager[object]] | int:
    """Train candidates in the study; a follower rank under ``torchrun`` returns its exit status instead."""
    from nas.cluster.torchrun import Ranks
    from nas.proxy.runtime import resolve_device

    resolve_device(cfg.device)  # a device this machine lacks fails before the study is touched
    trainer = CandidateTrainer(candidates, cfg.data_config(cfg.seed), cfg.train_config(cfg.seed))
    if candidates:  # the data loads (and is checked) before the study is opened
        cfg.check_data(trainer.data(candidates[0].proxy_resolution))
    ranks = Ranks.join(cfg.device)  # under torchrun: rank 0 runs the study, every rank trains
    if not ranks.leader:
        return ranks.follow(trainer)
    t0 = time.perf_counter()
    proxy = {k: getattr(cfg, k) for k in ("dataset", "proxy_resolution", "epochs", "val_size", "train_size", "seed")}
    settings = SearchSettings(cfg.study_name, cfg.storage, cfg.out_dir, cfg.pruner, cfg.max_candidates, cfg.timeout,
                              cfg.quiet)
    interrupted = True  # until the search returns: the other ranks may be gone
    try:
        results, interrupted, lock = run_search(settings, Evaluate(candidates, ranks.lead(trainer), seed=cfg.seed),
                                                study_settings(base.to_yaml(), candidates, proxy))
    finally:
        if not interrupted:
            ranks.close()
    log.info("grid search: %d candidate(s) evaluated in the study; this worker %.0f s, %d process(es) per "
             "candidate", len(results), time.perf_counter() - t0, ranks.world_size)
    return results, interrupted, lock


def run(cfg: GridConfig) -> int:
    """Plan, search the grid (unless the coefficients are given), write the family; returns the exit status."""
    from nas.cluster.storage import storage_files
    from scaling.outputs import OUTPUTS
    from search_spaces import resolve_arch
    from search_spaces.files import check_out_dir

    check_out_dir(cfg.out, (*OUTPUTS, *storage_files(cfg.storage)), ConfigError)

    base = resolve_arch(cfg.base)
    if cfg.resolution is not None:
        base = base.replace(resolution=cfg.resolution)
    t0 = time.perf_counter()
    candidates = cost_candidates(base, (cfg.given,) if cfg.given else cfg.grid.feasible(), cfg.resolution_multiple,
                                 cfg.proxy_resolution)
    seconds = time.perf_counter() - t0
    if not cfg.given:
        cfg.train_config(cfg.seed), cfg.data_config(cfg.seed)  # bad proxy options fail before anything is written
    if not cfg.quiet or cfg.dry_run:
        print(plan_text(cfg, base, candidates, seconds))
    if cfg.dry_run:
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        write_csv(cfg.out_dir / "candidates.csv", CANDIDATE_COLUMNS, candidate_rows(candidates, {}))
        print(f"dry run: {len(candidates)} candidate(s) in {cfg.out_dir / 'candidates.csv'}; nothing trained")
        return 0
    results: Results = {}
    interrupted = False
    lock: AbstractContextManager[object] = nullcontext()
    if not cfg.given:
        searched = _search(cfg, base, candidates)
        if isinstance(searched, int):
            return searched
        results, interrupted, lock = searched
    with lock:  # workers sharing --out write one at a time; the last one saw every result
        coefficients, chosen, variants = write_outputs(cfg, base, candidates, results, seconds)
    if coefficients is None:
        print(f"{PROG}: no candidate finished training; run the same command again to resume", file=sys.stderr)
        return common.EXIT_INTERRUPTED if interrupted else 1
    if not cfg.quiet:
        if chosen is not None:
            print(f"\nchosen     alpha={coefficients.alpha:g} beta={coefficients.beta:g} gamma={coefficients.gamma:g} "
                  f"(product {coefficients.product:.4f}, MACs ratio {chosen.macs_ratio:.3f}): accuracy "
                  f"{results[chosen.index]['accuracy']:.4f}, candidate {chosen.index}")
        print(f"\n{cfg.mode} family of {base.name or cfg.base}:\n{family_table(variants)}")
        written = sorted(p.name + ("/" if p.is_dir() else "") for p in cfg.out_dir.iterdir())
        print(f"\noutputs in {cfg.out_dir}/: {', '.join(written)}")
        if not cfg.given:  # a study was searched: where to watch it
            print(dashboard_line(cfg.storage, cfg.out_dir))
    return common.interrupted_exit(PROG) if interrupted else 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command: 0 done, 1 nothing trained, 2 bad input (one line), 3 storage unreachable, 130 interrupted."""
    from scaling.compound import ScalingError

    return common.study_main(PROG, "scaling.cli", argv, parse=parse_config, run=run, errors=(ScalingError,),
                      optuna_level=logging.WARNING, relaunch=lambda cfg: not cfg.dry_run and not cfg.given)


if __name__ == "__main__":
    sys.exit(main())
