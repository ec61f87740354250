"""``nas-search``: search the MnasNet space for the network that maximizes ``ACC x (MACs/T)^w``."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Protocol, Sequence

from nas.cli.common import (
    EXIT_INTERRUPTED,
    add_proxy_arguments,
    add_study_arguments,
    command_parser,
    glue_negative_values,
    interrupted_exit,
    study_main,
)
from nas.config import ConfigError, choices_help, config_fields, make_config, mask_url, read_config_file
from nas.search.config import PRUNERS, SAMPLERS, ZC_NAMES, SearchConfig
from nas.search.progress import Progress

if TYPE_CHECKING:
    import optuna

    from nas.cluster.locks import StudyLock
    from nas.proxy.data import ProxyData
    from nas.proxy.train import TrainConfig, TrainResult
    from nas.search.objective import Objective, StopAtTrials
    from search_spaces import ArchSpec
    from search_spaces.space import SearchSpace

    Train = Callable[[ArchSpec, "optuna.Trial | None", int], TrainResult]

    class Score(Protocol):
        def __call__(self, arch: ArchSpec, seed: int = ...) -> float: ...

__all__ = ["PROG", "build_parser", "parse_config", "run", "main"]

log = logging.getLogger("nas-search")
PROG = "nas-search"


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(PROG, __doc__)
    a = p.add_argument
    a("--config", help="YAML file of options (keys = flag names); flags override it")
    g = p.add_argument_group("objective")
    g.add_argument("--target-flops", help="MACs target T: 400M, 0.4G, 4e8 or 400000000 [400M]")
    g.add_argument("--reward-exponent", type=float, help="w of the soft constraint [-0.07]")
    g.add_argument("--reward", help="soft (ACC*(MACs/T)^w) or hard (w=0 at or under T, -1 over) [soft]")
    g.add_argument("--flops-band", type=float, help="reject untrained outside [T/band, T*band] [4]")
    g.add_argument("--resolution", type=int, help="deployment resolution at which MACs are counted [224]")
    g.add_argument("--cost", help="macs, or latency: measured on this device (batch 1), estimated from a "
                                  "per-layer table [macs]")
    g.add_argument("--target-latency", help="latency target T with --cost latency: 15ms, 1500us or 0.015s")
    g.add_argument("--latency-table", help="cache file of the per-layer latency table [OUT/latency_table.json]")
    g = p.add_argument_group("proxy task")
    g.add_argument("--proxy", help=f"train (the proxy task), supernet (inherited weights of a weight-sharing "
                                   f"supernet), or {choices_help(ZC_NAMES, prefix='zc:')} (a zero-cost score at "
                                   "initialization stands in for accuracy) [train]")
    g.add_argument("--supernet", help="with --proxy supernet: a trained supernet file, or A.pt,B.pt,...: the files of "
                                      "a supernet split by op kind that together cover the space, each candidate "
                                      "scored by the first whose space admits it (docs/supernet.md) [train one in "
                                      "OUT/supernet.pt first; a rerun resumes it]")
    g.add_argument("--supernet-epochs", type=float, help="epochs of the supernet's training [10]")
    g.add_argument("--supernet-random-subnets", type=int, help="random members each supernet training step "
                                                               "trains besides the largest and the smallest [2]")
    g.add_argument("--supernet-bn-batches", type=int, help="training batches each candidate's BN statistics are "
                                                           "recalibrated on [20]")
    g.add_argument("--supernet-val-images", type=int, help="score each candidate on the first N held-out images "
                                                           "(0: all) [0]")
    g.add_argument("--supernet-finetune", type=float, help="epochs of fine-tuning from the inherited weights "
                                                           "before scoring (0.1: a tenth) [0]")
    g.add_argument("--supernet-score", help="accuracy (held-out top-1 with inherited weights) or likelihood "
                                            "(exp of minus their held-out cross-entropy: a finer ranking, "
                                            "docs/supernet.md) [accuracy]")
    g.add_argument("--prescreen", help="K:k: score K random architectures in the cost band with "
                                       "--prescreen-proxy, queue the best k to train first")
    g.add_argument("--prescreen-proxy", help=choices_help(ZC_NAMES, "synflow"))
    add_proxy_arguments(g)
    g.add_argument("--nproc-per-node", help="processes per trial, each on its own GPU, trained with DDP "
                                            "(relaunches under torchrun; rank 0 talks to the study) [1]")
    g = p.add_argument_group("controller")
    g.add_argument("--trials", type=int, help="finished trials in the study, all workers together [20]")
    g.add_argument("--timeout", type=float, help="wall-clock limit of this worker, seconds")
    g.add_argument("--sampler", help=choices_help(SAMPLERS, "tpe"))
    g.add_argument("--pruner", help=choices_help(PRUNERS, "hyperband"))
    g.add_argument("--seed", type=int, help="[0]")
    g.add_argument("--seed-arch", help="comma-separated presets or YAML files to evaluate first")
    g.add_argument("--space", help="search-space YAML file or bundled name [mnasnet]")
    add_study_arguments(g, PROG)
    g.add_argument("--dry-run", action="store_true", default=None, help="print the plan and exit")
    g.add_argument("--quiet", action="store_true", default=None, help="no progress lines")
    return p


def parse_config(argv: Sequence[str] | None) -> SearchConfig:
    """The flags (over ``--config``'s YAML) as a validated ``SearchConfig``.

    Raises:
        ConfigError: a bad value, named with what was expected.
    """
    parser = build_parser()
    args = vars(parser.parse_args(glue_negative_values(parser, sys.argv[1:] if argv is None else argv)))
    file_values = read_config_file(args.pop("config"), config_fields(SearchConfig)) if args.get("config") else {}
    args.pop("config", None)
    args.pop("nproc_per_node", None)  # a launch option (see main), not a search setting
    config: SearchConfig = make_config(SearchConfig, file_values, args)
    return config


def run(cfg: SearchConfig) -> int:
    """Check everything, load the data, then search (rank 0) or train what rank 0 sends; returns the exit status."""
    from nas.cluster.storage import storage_files
    from nas.cluster.torchrun import Ranks
    from nas.proxy.data import load_data
    from nas.proxy.runtime import check_device, resolve_device
    from nas.proxy.train import train_proxy
    from nas.search.objective import check_reachable
    from nas.search.outputs import OUTPUTS, plan_text
    from search_spaces import build_model
    from search_spaces.files import check_out_dir
    from search_spaces.space import SearchSpace

    check_out_dir(cfg.out, (*OUTPUTS, *storage_files(cfg.storage), "latency_table.json", "supernet.pt"), ConfigError)

    space = SearchSpace.load(cfg.space)
    seeds = _seed_archs(cfg, space)
    check_reachable(cfg, space)
    tcfg, dcfg = cfg.train_config(cfg.seed), cfg.data_config(cfg.seed)
    if cfg.dry_run:
        print(plan_text(cfg, space, seeds))
        return 0
    check_device(cfg.device)  # a device this machine lacks fails before the data loads
    data = load_data(dcfg)
    cfg.check_data(data)  # before the study is opened: a bad value never reaches a trial

    def trained(arch: ArchSpec, trial: optuna.Trial | None, seed: int) -> TrainResult:
        import torch

        torch.manual_seed(seed)  # the same trial builds the same initial weights on resume and on every rank
        model = build_model(arch, num_classes=data.num_classes, in_chans=data.in_chans)
        return train_proxy(model, data, dataclasses.replace(tcfg, seed=seed), trial=trial)

    def zero_cost(name: str) -> Score:
        def score(arch: ArchSpec, seed: int = cfg.seed) -> float:
            from nas.proxy.zero_cost import score_arch

            return score_arch(arch, data, name, seed=seed, batch_size=min(cfg.batch_size, data.num_train),
                              device=resolve_device(cfg.device))  # after Ranks.join: this rank's own GPU
        return score

    train = _scored(zero_cost(cfg.proxy[3:])) if cfg.proxy.startswith("zc:") else trained
    settings: dict[str, object] = {}
    if cfg.proxy == "supernet":
        train, settings["supernet_digest"] = _supernet(cfg, space, data, tcfg)
    score = zero_cost(cfg.prescreen_proxy) if cfg.prescreen else None

    ranks = Ranks.join(cfg.device)
    if not ranks.leader:
        return ranks.follow(train)
    interrupted = True  # until the search returns: the other ranks may be gone
    try:
        code = _search(cfg, space, seeds, ranks.lead(train), ranks.world_size, dataclasses.asdict(tcfg), score,
                       settings)
        interrupted = code == EXIT_INTERRUPTED
        return code
    finally:
        if not interrupted:
            ranks.close()


def _seed_archs(cfg: SearchConfig, space: SearchSpace) -> list[ArchSpec]:
    """The ``--seed-arch`` networks; ``SpaceError`` names one that is not a member of the space."""
    from search_spaces import resolve_arch

    seeds = [resolve_arch(ref) for ref in cfg.seed_arch]
    for arch in seeds:
        space.encode(arch)
    return seeds


def _scored(score: Score) -> Train:
    """``train(arch, trial, seed)`` that returns a zero-cost score as the accuracy (``--proxy zc:NAME``)."""
    def train(arch: ArchSpec, trial: optuna.Trial | None, seed: int) -> TrainResult:
        import math
        import time

        from nas.proxy.train import TrainingDiverged, TrainResult

        t0 = time.perf_counter()
        value = score(arch, seed)
        if not math.isfinite(value):
            raise TrainingDiverged(f"zero-cost score is {value}")
        return TrainResult(accuracy=value, top5=None, loss=math.nan, epochs=0.0, images=0,
                           seconds=time.perf_counter() - t0)
    return train


def _supernet(cfg: SearchConfig, space: SearchSpace, data: ProxyData, tcfg: TrainConfig) -> tuple[Train, str]:
    """``--proxy supernet``: train (or resume) the supernet in ``--out``, or load ``--supernet`` (one file, or the
    files of a split supernet, checked to cover the space); then a ``train(arch, trial, seed)`` that scores with
    the inherited weights of the first file whose space admits the candidate, and the files' digest (one file's
    own, several joined by ``+``)."""
    from nas.proxy.runtime import resolve_device
    from nas.supernet import SupernetTrainConfig, pick, score
    from nas.supernet.proxy import SUPERNET_FILE, prepare_supernet, prepare_supernets, score_config, supernet_digest

    device = resolve_device(cfg.device)
    paths: list[str | Path] = list(cfg.supernet_files)
    if paths:
        supernets = prepare_supernets(space, data, paths, device, cover=True)
    else:
        paths = [cfg.out_dir / SUPERNET_FILE]
        recipe = SupernetTrainConfig(epochs=cfg.supernet_epochs, random_subnets=cfg.supernet_random_subnets,
                                     batch_size=cfg.batch_size, device=cfg.device, threads=cfg.threads, seed=cfg.seed)
        log.info("training the supernet in %s (%g epochs, %d random members per step; a rerun resumes it)",
                 paths[0], cfg.supernet_epochs, cfg.supernet_random_subnets)
        supernets = [prepare_supernet(space, data, paths[0], device, recipe)]

    def inherited(arch: ArchSpec, seed: int = cfg.seed) -> float:
        import torch

        torch.manual_seed(seed)  # the fine-tuning's dropout, when there is one
        return score(pick(supernets, arch), arch, data, bn_batches=cfg.supernet_bn_batches,  # the same BN batches
                     finetune_epochs=cfg.supernet_finetune, config=score_config(tcfg, cfg.seed),  # for every arch
                     metric=cfg.supernet_score, val_images=cfg.supernet_val_images)
    return _scored(inherited), supernet_digest(paths)


def _latency(cfg: SearchConfig) -> Callable[[ArchSpec], float]:
    """The estimated latency (seconds) of an architecture, from the cached per-layer table."""
    from nas.proxy.runtime import resolve_device
    from search_spaces.latency import LatencyTable

    path = Path(cfg.latency_table) if cfg.latency_table else cfg.out_dir / "latency_table.json"
    table = LatencyTable(path, resolution=cfg.resolution, device=resolve_device(cfg.device))
    return table.estimate


def _prescreen(cfg: SearchConfig, study: optuna.Study, space: SearchSpace, objective: Objective, score: Score,
               lock: StudyLock) -> None:
    """Queue the best k of K zero-cost-scored architectures once per study (the worker in slot 0 does it)."""
    import nas.search as ctl

    if "prescreen" in study.user_attrs or cfg.prescreen_counts is None:
        return
    many, keep = cfg.prescreen_counts
    log.info("pre-screening %d architectures with %s; the best %d train first", many, cfg.prescreen_proxy, keep)
    best = ctl.prescreen(space, cfg, score, lambda a: objective.out_of_band(objective.cost_of(a)) is None)
    with lock:
        if "prescreen" in study.user_attrs:
            return
        for rank, (value, arch) in enumerate(best):
            study.enqueue_trial(space.encode(arch), user_attrs={"prescreen_rank": rank, "prescreen_score": value},
                                skip_if_exists=True)
        study.set_user_attr("prescreen", {"proxy": cfg.prescreen_proxy, "sampled": many, "queued": len(best),
                                          "scores": [round(v, 4) for v, _ in best]})


def _open(cfg: SearchConfig, space: SearchSpace, seeds: Sequence[ArchSpec],
          settings: Mapping[str, object]) -> tuple[optuna.Study, StudyLock, int]:
    """The study, created or resumed (its settings checked), with the seed architectures queued once;
    its lock; this worker's slot."""
    import nas.search as ctl
    from nas.cluster import workers
    from nas.cluster.locks import StudyLock
    from nas.cluster.storage import is_journal, open_storage

    if is_journal(cfg.storage):
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(cfg.storage, cfg.out_dir)
    lock = StudyLock(storage, cfg.study_name)
    n_startup = max(5, min(10, cfg.trials // 4))
    slot: list[int] = []

    def sampler(probe: optuna.Study) -> optuna.samplers.BaseSampler:
        slot.append(workers.register_worker(probe, lock))
        return ctl.make_sampler(cfg.sampler, ctl.sampler_seed(cfg.seed, slot=slot[0]), n_startup)

    study = ctl.open_study(cfg.study_name, storage, ctl.study_directions(cfg),
                           {**ctl.search_settings(cfg, space), **settings}, sampler, ctl.make_pruner(cfg.pruner))
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    with lock:  # workers starting together queue each seed architecture once
        ctl.enqueue_seeds(study, space, list(seeds))
    return study, lock, slot[0]


def _search(cfg: SearchConfig, space: SearchSpace, seeds: Sequence[ArchSpec], train: Train, world_size: int,
            trainer: dict[str, object], score: Score | None = None,
            settings: Mapping[str, object] | None = None) -> int:
    """Rank 0's part: the study, the trials, the outputs."""
    import nas.search as ctl
    from nas.cluster import workers
    from nas.cluster.lease import RetryStaleTrial
    from nas.cluster.storage import MAX_RETRY
    from nas.cluster.trials import counted
    from nas.proxy.train import TrainingDiverged
    from nas.search.outputs import write_outputs

    study, lock, slot = _open(cfg, space, seeds, settings or {})
    objective = ctl.Objective(cfg, space, train, latency=_latency(cfg) if cfg.cost == "latency" else None,
                              multi_objective=cfg.sampler == "nsga2", lock=lock)
    if score is not None and slot == 0:
        _prescreen(cfg, study, space, objective, score, lock)
    stop = ctl.StopAtTrials(cfg.trials, max_attempts=20 * cfg.trials + 100)
    start = sum(counted(t) for t in study.get_trials(deepcopy=False))
    interrupted = False
    log.info("searching: %d of %d trials done; worker slot %d (%s), %d process(es) per trial", start, cfg.trials,
             slot, objective.worker, world_size)
    try:
        workers.optimize(study, objective, stop.done, cfg.timeout, [stop, Progress(cfg.trials, start, cfg.quiet)],
                         catch=(TrainingDiverged,))
    except KeyboardInterrupt:
        interrupted = True
        workers.requeue_interrupted(study, objective.worker, RetryStaleTrial(MAX_RETRY))
    extra = {"study_name": cfg.study_name, "storage": mask_url(cfg.storage) if cfg.storage else "journal (default)",
             "space": {"name": space.name, "digest": space.digest(), "size": space.size()},
             "seeds": {"seed": cfg.seed, "sampler_seed": ctl.sampler_seed(cfg.seed, slot=slot), "worker_index": slot},
             "worker": objective.worker, "processes_per_trial": world_size, "trainer": trainer}
    with lock:
        rows = write_outputs(cfg, study, space, extra)
    workers.release_worker(study, slot)
    return _finish(cfg, study, stop, rows, interrupted)


def _finish(cfg: SearchConfig, study: optuna.Study, stop: StopAtTrials, rows: list[dict[str, object]],
            interrupted: bool) -> int:
    """Print the top of the leaderboard and why the search stopped; returns the exit status."""
    from nas.cluster.storage import dashboard_line
    from nas.cluster.trials import counted
    from nas.search import report
    from nas.search.outputs import OUTPUTS

    if not cfg.quiet:
        print(report.top_table(rows))
        print(f"\n{sum(counted(t) for t in study.get_trials(deepcopy=False))} trials; outputs in {cfg.out_dir}/ "
              f"({', '.join(OUTPUTS)})")
        print(dashboard_line(cfg.storage, cfg.out_dir))
    why = stop.why(study)
    if why and why != "done":
        print(f"{PROG}: {why}", file=sys.stderr)
    return interrupted_exit(PROG) if interrupted else 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command: 0 done, 2 bad input (one line), 3 storage unreachable, 130 interrupted (the study is kept)."""
    from nas.supernet import SupernetError
    from search_spaces.space import SpaceError

    # optuna's log at ERROR: failed trials are reported by Progress
    return study_main(PROG, "nas.cli.search", argv, parse=parse_config, run=run, errors=(SpaceError, SupernetError),
                      optuna_level=logging.ERROR, relaunch=lambda cfg: not cfg.dry_run)


if __name__ == "__main__":
    sys.exit(main())
