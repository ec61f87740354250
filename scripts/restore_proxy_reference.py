"""Seed a fresh ``nas-proxy-check`` score cache with the reference runs of a published results CSV.

The 5-epoch stand-alone reference of the published proxy checks (``docs/proxy-check-*.csv``: the
columns ``reference_seed1``, ``reference_seed2``, ...) is the costliest part of a check: half an
hour on 2 CPU cores for 20 architectures. On a new machine, this writes those runs into the
cache of the ``nas-proxy-check`` command given after ``--``, so that command scores its proxies
against the same reference instead of training it again. The architectures are sampled as the
command samples them and matched to the CSV's rows by name and architecture string; a row that
does not match, or a cache that exists already, stops it with nothing written.

    python scripts/restore_proxy_reference.py docs/proxy-check-supernet-r4e30-bn5-fashion-mnist.csv -- \\
        --dataset fashion-mnist --train-size 5000 --val-size 2000 --archs 20 --include-b0 \\
        --reference-epochs 5 --reference-seeds 2 --proxies train:1,supernet --supernet S.pt --out runs/check
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from nas.cli.proxy_check import parse_config
from nas.fidelity.cache import CACHE_NAME, ScoreCache, cache_settings
from nas.fidelity.check import sample_archs
from search_spaces import default_space


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 1:
        print("usage: restore_proxy_reference.py RESULTS.csv -- NAS-PROXY-CHECK FLAGS", file=sys.stderr)
        return 2
    with open(argv[0], newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    cfg = parse_config(argv[2:])
    archs = sample_archs(default_space(), cfg.archs, cfg.seed, cfg.target_flops, cfg.flops_band, cfg.include_b0)
    path = cfg.out_dir / CACHE_NAME
    if path.exists():
        print(f"{path} exists: give a new --out", file=sys.stderr)
        return 2
    records = []
    for arch in archs:
        row = rows.get(arch.name or "")
        if row is None or row["arch"] != " ".join(s.to_str() for s in arch.stages):
            print(f"{arch.name}: no row of that name and architecture in {argv[0]}", file=sys.stderr)
            return 2
        for i, seed in enumerate(cfg.reference_seed_values, 1):
            records.append({"arch": arch.to_str(), "method": cfg.reference_method, "seed": seed,
                            "score": float(row[f"reference_seed{i}"]), "seconds": 0.0, "restored_from": argv[0]})
    data_cfg, trainer = cfg.task.data_config(cfg.seed), cfg.task.train_config(cfg.seed)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    cache = ScoreCache.open(Path(path), cache_settings(data_cfg, trainer, archs[0]))
    for record in records:
        cache.add(record)
    print(f"{len(records)} reference runs of {len(archs)} architectures written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
