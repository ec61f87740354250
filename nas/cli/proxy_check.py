"""``nas-proxy-check``: does a cheap proxy rank architectures the way longer training does?

K architectures are sampled from the MnasNet space (seeded, distinct, MACs at 224 px within
``[T/band, T*band]``, EfficientNet-B0 optionally among them). Each is scored by every proxy
(``train:E``: held-out accuracy after E proxy epochs; ``zc:NAME``: a zero-cost score of
``nas.proxy.zero_cost``) and by the reference (``--reference-epochs`` of training, once per
``--reference-seeds`` seed; the reference score is the mean over seeds). A proxy's fidelity is
its Kendall tau and Spearman rho with the reference, with 95% bootstrap intervals over the
architectures; the seed-to-seed agreement of the reference itself is the ceiling to compare with.

Every score is appended to ``scores.jsonl`` in ``--out`` as soon as it is computed; the same
command run again skips what is there. Settings that would change a stored score (dataset, data
split, trainer recipe, seed) must match the file's first line, else the run is refused. Proxies,
reference epochs and seeds, and the architecture count may change: only missing scores are computed.
A run holds a lock on the file, so a second run on the same ``--out`` is refused while it lasts.

``--supernet A.pt,B.pt,C.pt`` gives a supernet split by op kind (``nas.supernet.split``): each
architecture is scored by the first file whose space admits it; a supernet score is cached under
the digests of all the files, so scores of one supernet or another split are never reused.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import TYPE_CHECKING, Sequence

from nas.cli.common import EXIT_INTERRUPTED, add_proxy_arguments, command_parser, error_exit, glue_negative_values
from nas.config import ConfigError, make_config
from nas.fidelity.analysis import analyse, plot_scatter, report_table, write_results_csv, write_summary
from nas.fidelity.cache import CACHE_NAME, ScoreCache, cache_settings, exclusive
from nas.fidelity.check import compute_missing, measure, plan_items, sample_archs
from nas.fidelity.config import DEFAULT_PROXIES, TASK_FIELDS, CheckConfig, is_supernet_method, parse_proxies
from nas.proxy.config import ProxyTaskConfig

if TYPE_CHECKING:
    import torch

    from nas.fidelity.check import Scorer
    from nas.proxy.data import ProxyData
    from nas.proxy.train import TrainConfig
    from search_spaces import ArchSpec

# The library names this command used to define, importable from here as before.
__all__ = ["PROG", "CACHE_NAME", "CheckConfig", "parse_proxies", "sample_archs", "plan_items", "measure",
           "compute_missing", "exclusive", "build_parser", "parse_config", "run", "main"]

log = logging.getLogger("nas-proxy-check")
PROG = "nas-proxy-check"


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(PROG, __doc__)
    g = p.add_argument_group("architectures")
    g.add_argument("--archs", type=int, help="architectures to rank, EfficientNet-B0 included if asked [20]")
    g.add_argument("--seed", type=int, help="seed of the sampling, the data split and the training runs [0]")
    g.add_argument("--target-flops", help="MACs target T at 224 px: 400M, 0.4G, 4e8 or 400000000 [400M]")
    g.add_argument("--flops-band", type=float, help="keep architectures within [T/band, T*band] [4]")
    g.add_argument("--include-b0", action="store_true", default=None, help="rank EfficientNet-B0 too")
    g = p.add_argument_group("proxies and reference")
    g.add_argument("--proxies", help=f"comma list of train:EPOCHS, zc:NAME, supernet (inherited weights), "
                                     f"supernet-loss (their held-out cross-entropy, negated) and "
                                     f"supernet+ft:EPOCHS (inherited weights, fine-tuned) [{DEFAULT_PROXIES}]")
    g.add_argument("--supernet", help="the trained supernet of the supernet proxies (nas-search --proxy supernet "
                                      "trains one), or A.pt,B.pt,...: the files of a supernet split by op kind, "
                                      "each candidate scored by the first whose space admits it (docs/supernet.md)")
    g.add_argument("--supernet-bn-batches", type=int, help="training batches each candidate's BN statistics are "
                                                           "recalibrated on [20]")
    g.add_argument("--supernet-val-images", type=int, help="score each candidate on the first N held-out images "
                                                           "(0: all) [0]")
    g.add_argument("--reference-epochs", type=float, help="epochs of the reference training [5]")
    g.add_argument("--reference-seeds", type=int, help="reference runs per architecture, one per seed [2]")
    g = p.add_argument_group("proxy task (as nas-search)")
    add_proxy_arguments(g, hidden=("epochs",))  # --epochs is refused: see parse_config
    p.add_argument("--out", help="output directory, also the resumable score cache [runs/proxy-check]")
    return p


def parse_config(argv: Sequence[str]) -> CheckConfig:
    """The flags as a validated ``CheckConfig``.

    Raises:
        ConfigError: a bad value, named with what was expected.
    """
    parser = build_parser()
    args = {k: v for k, v in vars(parser.parse_args(glue_negative_values(parser, list(argv)))).items() if v is not None}
    if "epochs" in args:
        raise ConfigError("--epochs does not apply here: give training proxies as --proxies train:EPOCHS "
                          "and the reference's length as --reference-epochs")
    task: ProxyTaskConfig = make_config(ProxyTaskConfig, {}, {k: args.pop(k) for k in TASK_FIELDS if k in args})
    config: CheckConfig = make_config(CheckConfig, {}, {**args, "task": task})
    config.check_complete()
    return config


def run(cfg: CheckConfig) -> int:
    """Validate and load everything, then compute the missing scores, then analyse and write the report."""
    from nas.proxy.data import load_data
    from nas.proxy.runtime import resolve_device, torch_threads
    from search_spaces import default_space
    from search_spaces.files import check_out_dir

    out = cfg.out_dir
    check_out_dir(cfg.out, (CACHE_NAME, "results.csv", "summary.json", "scatter.png"), ConfigError)
    device = resolve_device(cfg.task.device)
    archs = sample_archs(default_space(), cfg.archs, cfg.seed, cfg.target_flops, cfg.flops_band, cfg.include_b0)
    data_cfg, trainer = cfg.task.data_config(cfg.seed), cfg.task.train_config(cfg.seed)
    data = load_data(data_cfg)
    cfg.check_data(data)  # before the first score
    stored, scorers = _supernet_scorers(cfg, data, trainer, device, archs) if cfg.uses_supernet else ({}, {})
    items = plan_items(cfg, archs, stored)
    out.mkdir(parents=True, exist_ok=True)  # every input has been checked; an existing cache is left as it is
    path, settings = out / CACHE_NAME, cache_settings(data_cfg, trainer, archs[0])
    try:
        with exclusive(path), torch_threads(cfg.task.threads):
            cache = ScoreCache.open(path, settings)
            computed = compute_missing(items, cache, data, trainer, device, scorers)
    except KeyboardInterrupt:
        done = sum(item.key in ScoreCache.open(path, settings) for item in items)
        print(f"{PROG}: interrupted; {done} of {len(items)} scores are in {path}. "
              f"Run the same command again to continue.", file=sys.stderr)
        return EXIT_INTERRUPTED
    analysis = analyse(cfg, archs, cache, stored)
    write_results_csv(cfg, analysis, out / "results.csv")
    write_summary(cfg, analysis, computed, len(items), out / "summary.json")
    plotted = plot_scatter(cfg, analysis, out / "scatter.png")
    print(report_table(cfg, analysis))
    print(f"\noutputs in {out}/: results.csv, summary.json{', scatter.png' if plotted else ''}, {CACHE_NAME}")
    return 0


def _supernet_scorers(cfg: CheckConfig, data: ProxyData, trainer: TrainConfig, device: torch.device,
                      archs: Sequence[ArchSpec]) -> tuple[dict[str, str], dict[str, Scorer]]:
    """The supernet proxies: each one's name in the cache (with the digests of the supernet's files, the BN
    batches and the held-out images) and scorer. Several files are a split supernet: each architecture is scored
    by the first whose space admits it, and every file is checked before the first score."""
    import torch

    from nas.supernet import pick, score
    from nas.supernet.proxy import prepare_supernets, score_config, supernet_tag
    from search_spaces import default_space

    supernets = prepare_supernets(default_space(), data, cfg.supernet_files, device, archs)
    tag = supernet_tag(cfg.supernet_files, cfg.supernet_bn_batches, cfg.supernet_val_images)

    def scorer(method: str) -> Scorer:
        finetune = float(method.partition(":")[2] or 0)
        metric = "loss" if method == "supernet-loss" else "accuracy"

        def score_arch(arch: ArchSpec, seed: int) -> float:
            torch.manual_seed(seed)  # the fine-tuning's batches and dropout
            return score(pick(supernets, arch), arch, data, bn_batches=cfg.supernet_bn_batches,
                         finetune_epochs=finetune, config=score_config(trainer, seed), metric=metric,
                         val_images=cfg.supernet_val_images)
        return score_arch

    methods = [m for m in cfg.proxies if is_supernet_method(m)]
    stored = {m: m + tag for m in methods}
    return stored, {m + tag: scorer(m) for m in methods}


def main(argv: Sequence[str] | None = None) -> int:
    """The command: exit 0 with the report, 2 with one ``nas-proxy-check: error: ...`` line, 130 interrupted."""
    from nas.proxy.data import DataError
    from nas.supernet import SupernetError
    from search_spaces import SpecError
    from search_spaces.space import SpaceError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # preemption ends like Ctrl-C: the cache is kept
    try:
        return run(parse_config(sys.argv[1:] if argv is None else argv))
    except (ConfigError, SpecError, SpaceError, DataError, SupernetError) as exc:
        return error_exit(PROG, exc)


if __name__ == "__main__":
    sys.exit(main())
