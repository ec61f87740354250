"""What ``nas-search`` shows and writes: the plan of a run, and the outputs of the whole study as it stands."""
from __future__ import annotations

from typing import Sequence

import optuna

from nas.config import mask_url, public_dict
from nas.search import report
from nas.search.config import SearchConfig
from nas.search.objective import best_trial
from nas.search.reward import reward
from search_spaces import ArchSpec, count_cost
from search_spaces.files import atomic_write
from search_spaces.space import SearchSpace

__all__ = ["OUTPUTS", "plan_text", "write_outputs"]

OUTPUTS = ("best.yaml", "leaderboard.csv", "pareto.png", "history.png", "manifest.json")


def plan_text(cfg: SearchConfig, space: SearchSpace, seeds: Sequence[ArchSpec]) -> str:
    """The plan ``--dry-run`` prints: the space, the data, the objective, the budget, the storage, the seeds."""
    if cfg.cost == "macs":
        objective = (f"objective  {cfg.reward} ACC*(MACs/T)^w, T={cfg.target_flops / 1e6:g}M MACs at "
                     f"{cfg.resolution}px, ")
    else:
        objective = (f"objective  {cfg.reward} ACC*(LAT/T)^w, T={cfg.target * 1e3:g} ms latency at "
                     f"{cfg.resolution}px (batch 1, per-layer table), ")
    accuracy = "held-out accuracy" if cfg.proxy == "train" else f"zero-cost score {cfg.proxy[3:]} at initialization"
    objective += (f"w={cfg.reward_exponent:g}; untrained reject outside x{cfg.flops_band:g}; ACC = {accuracy}"
                  + (f"; pre-screen {cfg.prescreen} by {cfg.prescreen_proxy}" if cfg.prescreen else ""))
    lines = [
        f"space      {space.name} ({cfg.space}): {space.size():.3e} architectures, {len(space.choices())} "
        f"parameters, digest {space.digest()}",
        f"dataset    {cfg.dataset} ({cfg.data_dir or 'default location'}), proxy {cfg.proxy_resolution}px, "
        f"{cfg.epochs:g} epoch(s) per trial, held-out {cfg.val_size:g}",
        objective,
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


def write_outputs(cfg: SearchConfig, study: optuna.Study, space: SearchSpace,
                  extra: dict[str, object]) -> list[dict[str, object]]:
    """Leaderboard, plots, best.yaml and manifest.json of the whole study, as it stands now; returns its rows.

    Each file is replaced whole (``atomic_write``). Called under the study lock: the last worker to
    write saw every finished trial.
    """
    rows = report.trial_rows(study.get_trials(deepcopy=False))
    out = cfg.out_dir
    with atomic_write(out / "leaderboard.csv") as tmp:
        report.write_leaderboard(rows, tmp)
    with atomic_write(out / "pareto.png", missing_ok=True) as tmp:  # no matplotlib: no plot
        report.plot_pareto(rows, cfg.target_flops, tmp)
    with atomic_write(out / "history.png", missing_ok=True) as tmp:
        report.plot_history(rows, tmp)
    best = best_trial(study)
    with atomic_write(out / "manifest.json") as tmp:
        report.write_manifest(tmp, public_dict(cfg), {**extra, "best_trial": best.number if best else None})
    if best is not None:
        arch = space.from_params(best.params).replace(name=f"{cfg.study_name}-trial{best.number}")
        ua = best.user_attrs
        header = (f"# best of study {cfg.study_name!r}: trial {best.number}, reward {ua['reward']:.4f}, "
                  f"accuracy {ua['accuracy']:.4f}, {ua['macs']:,} MACs at {cfg.resolution}px, "
                  f"{ua['params']:,} params\n")
        with atomic_write(out / "best.yaml") as tmp:
            tmp.write_text(header + arch.to_yaml())
    return rows
