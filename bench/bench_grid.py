"""Compound scaling, measured in one run: grid cost, the official family against the reference, and
the paper's α^φ rule against the official table.

    python bench/bench_grid.py [--base efficientnet-b0] [--repeat 5]

Prints (1) the time to enumerate, order and cost the full default grid (step 0.05, 1..2,
tolerance 0.1); (2) official-mode B1..B7 of B0 against docs/reference.md §2 parameter counts, as
ratios; (3) compound mode with the paper's (1.2, 1.1, 1.15) beside the official table, with the φ
each official model implies per dimension (ln d / ln α, ln w / ln β, ln(r / 224) / ln γ).
"""
from __future__ import annotations

import argparse
import math
import time

from scaling import PHIS, Coefficients, Grid, cost_candidates, make_family
from search_spaces import count_cost, resolve_arch

# docs/reference.md section 2: exact parameter counts (timm, torchvision, efficientnet_pytorch).
REFERENCE_PARAMS = {1: 7_794_184, 2: 9_109_994, 3: 12_233_232, 4: 19_341_616, 5: 30_389_784, 6: 43_040_704,
                    7: 66_347_960}
PAPER = Coefficients(1.2, 1.1, 1.15)  # docs/reference.md section 4


def time_grid(base, repeat: int) -> None:
    best, n = math.inf, 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        candidates = cost_candidates(base, Grid().feasible())
        best = min(best, time.perf_counter() - t0)
        n = len(candidates)
    t0 = time.perf_counter()
    for _ in range(200):
        count_cost(base)
    per_cost = (time.perf_counter() - t0) / 200
    print(f"full default grid (step 0.05, 1..2, |a*b^2*g^2 - 2| <= 0.1): {len(Grid().values()) ** 3} points, "
          f"{n} candidates, enumerated + ordered + costed in {best:.3f} s (best of {repeat}); "
          f"count_cost {per_cost * 1e3:.2f} ms per network")


def official_vs_reference(base) -> None:
    print("\nofficial mode on efficientnet-b0 vs docs/reference.md section 2 (params)")
    print(f"{'phi':>3} {'reference':>11} {'effnas':>11} {'ratio':>9}")
    for v in make_family(base, PHIS, "official"):
        print(f"{v.phi:>3} {REFERENCE_PARAMS[v.phi]:>11,} {v.params:>11,} {v.params / REFERENCE_PARAMS[v.phi]:9.6f}")


def compound_vs_official(base) -> None:
    official = make_family(base, PHIS, "official")
    compound = make_family(base, PHIS, "compound", PAPER)
    print(f"\ncompound (alpha, beta, gamma) = {PAPER.as_tuple()} vs the official table, base "
          f"{base.name}: {count_cost(base).macs / 1e9:.4f} GMACs")
    print(f"{'':>3} | {'official':^44} | {'compound alpha^phi, beta^phi, 224 gamma^phi':^44} | "
          f"{'compound/official':^13} | {'phi implied by official':^20}")
    print(f"{'phi':>3} | {'depth':>5} {'width':>5} {'res':>4} {'params':>11} {'GMACs':>7} {'xB0':>6} | "
          f"{'depth':>5} {'width':>5} {'res':>4} {'params':>11} {'GMACs':>7} {'xB0':>6} | "
          f"{'params':>6} {'MACs':>6} | {'d':>6} {'w':>6} {'r':>6} | 2^phi")
    for o, c in zip(official, compound):
        od, ow, orr = o.arch.depth_mult, o.arch.width_mult, o.arch.resolution
        implied = (math.log(od / base.depth_mult) / math.log(PAPER.alpha),
                   math.log(ow / base.width_mult) / math.log(PAPER.beta),
                   math.log(orr / base.resolution) / math.log(PAPER.gamma))
        print(f"{o.phi:>3} | {od:5.2f} {ow:5.2f} {orr:>4} {o.params:>11,} {o.macs / 1e9:7.3f} {o.macs_ratio:6.2f} | "
              f"{c.arch.depth_mult:5.2f} {c.arch.width_mult:5.2f} {c.arch.resolution:>4} {c.params:>11,} "
              f"{c.macs / 1e9:7.3f} {c.macs_ratio:6.2f} | {c.params / o.params:6.2f} {c.macs / o.macs:6.2f} | "
              f"{implied[0]:6.2f} {implied[1]:6.2f} {implied[2]:6.2f} | {2 ** o.phi:>5}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="efficientnet-b0")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    base = resolve_arch(args.base)
    time_grid(base, args.repeat)
    if base.name == "efficientnet-b0":
        official_vs_reference(base)
    compound_vs_official(base)


if __name__ == "__main__":
    main()
