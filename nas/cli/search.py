"""``nas-search``: search the MnasNet space for the network that maximizes ``ACC x (MACs/T)^w``."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from nas.config import ConfigError, config_fields, make_config, mask_url, public_dict, read_config_file

from nas.search.config import SearchConfig
from nas.search.progress import Progress

log = logging.getLogger("nas-search")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_proxy_arguments(g: Any, unit: str, proxy_resolution_help: str) -> None:
    """The proxy-task flags of nas-search and nas-grid-scale: the same names with the same meaning."""
    g.add_argument("--dataset", help="digits, fashion-mnist, mnist, cifar10, cifar100, imagefolder, synthetic [digits]")
    g.add_argument("--data-dir", help="dataset directory (fashion-mnist: /usr/share/datasets/fashion-mnist)")
    g.add_argument("--proxy-resolution", type=int, help=proxy_resolution_help)
    g.add_argument("--val-size", type=float, help="held-out part of the training set: fraction or count [0.1]")
    g.add_argument("--train-size", type=int, help="cap on training images")
    g.add_argument("--epochs", type=float, help=f"proxy epochs per {unit} [1]")
    g.add_argument("--batch-size", type=int, help="[128]")
    g.add_argument("--lr", type=float, help="learning rate [the trainer's default]")
    g.add_argument("--max-seconds", type=float, help=f"training time cap per {unit}")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N [auto]")
    g.add_argument("--threads", type=int, help="torch CPU threads")


def add_study_arguments(g: Any, prog: str) -> None:
    """``--storage``, ``--study-name`` and ``--out``: the same meaning in nas-search and nas-grid-scale."""
    g.add_argument("--storage", help="Optuna storage: journal:PATH, sqlite:///..., postgresql://... "
                                     "[a journal file in --out]")
    g.add_argument("--study-name", help=f"[{prog}]")
    g.add_argument("--out", help=f"output directory [runs/{prog}]")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nas-search", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=None)
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
    g.add_argument("--proxy", help="train (the proxy task), or zc:synflow, zc:naswot, zc:grad_norm, zc:snip "
                                   "(a zero-cost score at initialization stands in for accuracy) [train]")
    g.add_argument("--prescreen", help="K:k: score K random architectures in the cost band with "
                                       "--prescreen-proxy, queue the best k to train first")
    g.add_argument("--prescreen-proxy", help="synflow, naswot, grad_norm, snip [synflow]")
    add_proxy_arguments(g, "trial", "training resolution of the proxy [32]")
    g.add_argument("--nproc-per-node", help="processes per trial, each on its own GPU, trained with DDP "
                                            "(relaunches under torchrun; rank 0 talks to the study) [1]")
    g = p.add_argument_group("controller")
    g.add_argument("--trials", type=int, help="finished trials in the study, all workers together [20]")
    g.add_argument("--timeout", type=float, help="wall-clock limit of this worker, seconds")
    g.add_argument("--sampler", help="tpe, random, nsga2, gp, rl (MnasNet-style policy-gradient controller) [tpe]")
    g.add_argument("--pruner", help="hyperband, median, none [hyperband]")
    g.add_argument("--seed", type=int, help="[0]")
    g.add_argument("--seed-arch", help="comma-separated presets or YAML files to evaluate first")
    g.add_argument("--space", help="search-space YAML file or bundled name [mnasnet]")
    add_study_arguments(g, "nas-search")
    g.add_argument("--dry-run", action="store_true", default=None, help="print the plan and exit")
    g.add_argument("--quiet", action="store_true", default=None, help="no progress lines")
    return p


def glue_negative_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--target-flops -400M`` -> ``--target-flops=-400M``, so the bad value reaches validation."""
    takes_value = {s for a in parser._actions if a.nargs is None and a.option_strings for s in a.option_strings}
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in takes_value and i + 1 < len(argv) and argv[i + 1].startswith("-") \
                and argv[i + 1] not in parser._option_string_actions:
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def parse_config(argv: list[str] | None) -> SearchConfig:
    parser = build_parser()
    args = vars(parser.parse_args(glue_negative_values(parser, sys.argv[1:] if argv is None else argv)))
    file_values = read_config_file(args.pop("config"), config_fields(SearchConfig)) if args.get("config") else {}
    args.pop("config", None)
    args.pop("nproc_per_node", None)  # a launch option (see main), not a search setting
    return make_config(SearchConfig, file_values, args)


def train_config(cfg: SearchConfig) -> Any:
    from nas.proxy.train import TrainConfig

    values = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "device": cfg.device, "seed": cfg.seed,
              "max_seconds": cfg.max_seconds, "threads": cfg.threads}
    if cfg.lr is not None:
        values["lr"] = cfg.lr
    values["amp"] = _default_amp(cfg.device)
    values.update(cfg.train)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"train: unknown key {unknown[0]!r}, expected one of {sorted(known)}")
    try:
        return TrainConfig(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def _default_amp(device: str) -> str:
    """bf16 autocast where the training device supports it (CUDA, Ampere or newer), else none."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return "none"
    try:
        return "bf16" if torch.device(device if device != "auto" else "cuda").type == "cuda" \
            and torch.cuda.is_bf16_supported() else "none"
    except RuntimeError:  # a malformed device: TrainConfig names it
        return "none"


def data_config(cfg: SearchConfig) -> Any:
    from nas.proxy.data import DataConfig

    loaders = os.environ.get("NAS_LOADER_WORKERS", "")  # image decoders per process (imagefolder); cluster recipes
    if loaders and not loaders.isdigit():
        raise ConfigError(f"NAS_LOADER_WORKERS must be a whole number, but got {loaders!r}")
    extra = {"workers": int(loaders)} if loaders else {}
    try:
        return DataConfig(name=cfg.dataset, data_dir=cfg.data_dir, val_size=cfg.val_size,
                          train_size=cfg.train_size, resolution=cfg.proxy_resolution, seed=cfg.seed, **extra)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def _plan(cfg: SearchConfig, space: Any, seeds: list) -> str:
    from search_spaces import count_cost

    from nas.search.reward import reward

    lines = [
        f"space      {space.name} ({cfg.space}): {space.size():.3e} architectures, {len(space.choices())} "
        f"parameters, digest {space.digest()}",
        f"dataset    {cfg.dataset} ({cfg.data_dir or 'default location'}), proxy {cfg.proxy_resolution}px, "
        f"{cfg.epochs:g} epoch(s) per trial, held-out {cfg.val_size:g}",
        (f"objective  {cfg.reward} ACC*(MACs/T)^w, T={cfg.target_flops / 1e6:g}M MACs at {cfg.resolution}px, "
         if cfg.cost == "macs" else
         f"objective  {cfg.reward} ACC*(LAT/T)^w, T={cfg.target_latency * 1e3:g} ms latency at {cfg.resolution}px "
         f"(batch 1, per-layer table), ")
        + f"w={cfg.reward_exponent:g}; untrained reject outside x{cfg.flops_band:g}; ACC = "
        + ("held-out accuracy" if cfg.proxy == "train" else f"zero-cost score {cfg.proxy[3:]} at initialization")
        + (f"; pre-screen {cfg.prescreen} by {cfg.prescreen_proxy}" if cfg.prescreen else ""),
        f"budget     {cfg.trials} trials, timeout {cfg.timeout or 'none'}, sampler {cfg.sampler}, "
        f"pruner {cfg.pruner}, seed {cfg.seed}",
        f"storage    {mask_url(cfg.storage) if cfg.storage else str(cfg.out_dir / 'study.journal')}, "
        f"study {cfg.study_name!r}, out {cfg.out}",
    ]
    for arch in seeds:
        c = count_cost(arch, cfg.resolution)
        lines.append(f"seed arch  {arch.name}: {c.macs / 1e6:.1f}M MACs, {c.params / 1e6:.2f}M params, "
                     f"reward at 100% acc {reward(1.0, c.macs, cfg.target_flops, cfg.reward_exponent, cfg.reward):.4f}")
    return "\n".join(lines)


def _replace_atomically(path: Path, write: Any) -> None:
    """``write(tmp)`` then rename over ``path``: workers sharing ``--out`` never see a half-written file."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        if write(tmp) is not False and tmp.exists():
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_outputs(cfg: SearchConfig, study: Any, space: Any, extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Leaderboard, plots, best.yaml and manifest.json of the whole study, as it stands now.

    Called under the study lock: the last worker to write saw every finished trial.
    """
    import nas.search as ctl
    from nas.search import report

    rows = report.trial_rows(study.get_trials(deepcopy=False))
    out = cfg.out_dir
    _replace_atomically(out / "leaderboard.csv", lambda p: report.write_leaderboard(rows, p))
    _replace_atomically(out / "pareto.png", lambda p: report.plot_pareto(rows, cfg.target_flops, p))
    _replace_atomically(out / "history.png", lambda p: report.plot_history(rows, p))
    best = ctl.best_trial(study)
    _replace_atomically(out / "manifest.json", lambda p: report.write_manifest(
        p, public_dict(cfg), {**extra, "best_trial": best.number if best else None}))
    if best is not None:
        arch = space.from_params(best.params).replace(name=f"{cfg.study_name}-trial{best.number}")
        ua = best.user_attrs
        header = (f"# best of study {cfg.study_name!r}: trial {best.number}, reward {ua['reward']:.4f}, "
                  f"accuracy {ua['accuracy']:.4f}, {ua['macs']:,} MACs at {cfg.resolution}px, {ua['params']:,} params\n")
        _replace_atomically(out / "best.yaml", lambda p: p.write_text(header + arch.to_yaml()))
    return rows


def run(cfg: SearchConfig) -> int:
    from search_spaces import build_model, resolve_arch
    from search_spaces.space import SearchSpace

    from nas.proxy.data import load_data
    from nas.proxy.train import train_proxy
    from nas.cluster.torchrun import Ranks

    space = SearchSpace.load(cfg.space)
    seeds = [resolve_arch(ref) for ref in cfg.seed_arch]
    for arch in seeds:
        space.encode(arch)  # raises SpaceError naming the misfit
    tcfg, dcfg = train_config(cfg), data_config(cfg)
    if cfg.dry_run:
        print(_plan(cfg, space, seeds))
        return 0
    data = load_data(dcfg)

    def train(arch: Any, trial: Any, seed: int) -> Any:
        import torch

        torch.manual_seed(seed)  # the same trial builds the same initial weights on resume and on every rank
        model = build_model(arch, num_classes=data.num_classes, in_chans=data.in_chans)
        return train_proxy(model, data, dataclasses.replace(tcfg, seed=seed), trial=trial)

    def zero_cost(name: str) -> Any:
        def score(arch: Any, seed: int = cfg.seed) -> float:
            from nas.proxy.zero_cost import score_arch

            return score_arch(arch, data, name, seed=seed, batch_size=min(cfg.batch_size, data.num_train),
                              device=_device(cfg))
        return score

    if cfg.proxy.startswith("zc:"):
        train = _scored(zero_cost(cfg.proxy[3:]))
    score = zero_cost(cfg.prescreen_proxy) if cfg.prescreen else None

    ranks = Ranks.join(cfg.device)
    if not ranks.leader:
        return ranks.follow(train)
    interrupted = True  # until the search returns: the other ranks may be gone
    try:
        code = _search(cfg, space, seeds, ranks.lead(train), ranks.world_size, dataclasses.asdict(tcfg), score)
        interrupted = code == 130
        return code
    finally:
        if not interrupted:
            ranks.close()


def _scored(score: Any) -> Any:
    """``train(arch, trial, seed)`` that returns a zero-cost score as the accuracy (``--proxy zc:NAME``)."""
    def train(arch: Any, trial: Any, seed: int) -> Any:
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


def _device(cfg: SearchConfig) -> str:
    """``--device``, with ``auto`` resolved: this process's GPU where there is one, else the CPU."""
    import torch

    if cfg.device != "auto":
        return cfg.device
    return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"


def _latency(cfg: SearchConfig) -> Any:
    """The estimated latency (seconds) of an architecture, from the cached per-layer table."""
    from search_spaces.latency import LatencyTable

    path = Path(cfg.latency_table) if cfg.latency_table else cfg.out_dir / "latency_table.json"
    table = LatencyTable(path, resolution=cfg.resolution, device=_device(cfg))
    return table.estimate


def _prescreen(cfg: SearchConfig, study: Any, space: Any, objective: Any, score: Any, lock: Any) -> None:
    """Queue the best k of K zero-cost-scored architectures once per study (the worker in slot 0 does it)."""
    import nas.search as ctl

    if "prescreen" in study.user_attrs:
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


def _search(cfg: SearchConfig, space: Any, seeds: list, train: Any, world_size: int, trainer: dict,
            score: Any = None) -> int:
    """Rank 0's part: the study, the trials, the outputs."""
    import nas.search as ctl
    from nas.search import report
    from nas.cluster import workers
    from nas.cluster.lease import RetryStaleTrial
    from nas.cluster.trials import counted
    from nas.cluster.locks import StudyLock
    from nas.cluster.storage import MAX_RETRY, is_journal, open_storage
    from nas.proxy.train import TrainingDiverged

    if is_journal(cfg.storage):
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(cfg.storage, cfg.out_dir)
    lock = StudyLock(storage, cfg.study_name)
    n_startup = max(5, min(10, cfg.trials // 4))
    slot: list[int] = []

    def sampler(probe: Any) -> Any:
        slot.append(workers.register_worker(probe, lock))
        return ctl.make_sampler(cfg.sampler, ctl.sampler_seed(cfg.seed, slot=slot[0]), n_startup)

    study = ctl.open_study(cfg.study_name, storage, ctl.study_directions(cfg), ctl.search_settings(cfg, space),
                           sampler, ctl.make_pruner(cfg.pruner))
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    with lock:  # workers starting together queue each seed architecture once
        ctl.enqueue_seeds(study, space, seeds)
    objective = ctl.Objective(cfg, space, train, latency=_latency(cfg) if cfg.cost == "latency" else None,
                              multi_objective=cfg.sampler == "nsga2", lock=lock)
    if score is not None and slot[0] == 0:
        _prescreen(cfg, study, space, objective, score, lock)
    stop = ctl.StopAtTrials(cfg.trials, max_attempts=20 * cfg.trials + 100)
    start = sum(counted(t) for t in study.get_trials(deepcopy=False))
    interrupted = False
    log.info("searching: %d of %d trials done; worker slot %d (%s), %d process(es) per trial", start, cfg.trials,
             slot[0], objective.worker, world_size)
    try:
        workers.optimize(study, objective, stop.done, cfg.timeout, [stop, Progress(cfg.trials, start, cfg.quiet)],
                         catch=(TrainingDiverged,))
    except KeyboardInterrupt:
        interrupted = True
        workers.requeue_interrupted(study, objective.worker, RetryStaleTrial(MAX_RETRY))
    extra = {"study_name": cfg.study_name, "storage": mask_url(cfg.storage) if cfg.storage else "journal (default)",
             "space": {"name": space.name, "digest": space.digest(), "size": space.size()},
             "seeds": {"seed": cfg.seed, "sampler_seed": getattr(study.sampler, "_seed", None),
                       "worker_index": slot[0]},
             "worker": objective.worker, "processes_per_trial": world_size, "trainer": trainer}
    with lock:
        rows = write_outputs(cfg, study, space, extra)
    workers.release_worker(study, slot[0])
    if not cfg.quiet:
        print(report.top_table(rows))
        print(f"\n{sum(counted(t) for t in study.get_trials(deepcopy=False))} trials; outputs in {cfg.out_dir}/ "
              f"(best.yaml, leaderboard.csv, pareto.png, history.png, manifest.json)")
    why = stop.why(study)
    if why and why != "done":
        print(f"nas-search: {why}", file=sys.stderr)
    if interrupted:
        cmd = " ".join(shlex.quote(mask_url(a)) for a in ["nas-search", *sys.argv[1:]])
        print(f"nas-search: interrupted; the study is kept. Resume with: {cmd}", file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    from search_spaces import SpecError
    from search_spaces.space import SpaceError

    from nas.proxy.data import DataError
    from nas.cluster.storage import StorageUnavailable
    from nas.cluster.torchrun import relaunch_under_torchrun, split_nproc, under_torchrun

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are reported by Progress
        try:
            nproc, rest = split_nproc(argv)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        cfg = parse_config(argv)
        if cfg.quiet:
            logging.getLogger().setLevel(logging.WARNING)
        if nproc > 1 and not under_torchrun() and not cfg.dry_run:
            return relaunch_under_torchrun("nas.cli.search", nproc, rest)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # preemption ends like Ctrl-C
        return run(cfg)
    except StorageUnavailable as exc:
        print(f"nas-search: error: {exc}", file=sys.stderr)
        return 3
    except (ConfigError, SpecError, SpaceError, DataError) as exc:
        print(f"nas-search: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
