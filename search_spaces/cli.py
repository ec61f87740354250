"""``nas-cost``: parameters and MACs of presets or architecture files, from the analytic cost model."""
from __future__ import annotations

import sys

from nas.cli.common import EXIT_USAGE, Parser, error_exit
from search_spaces.cost import CONVENTIONS, count_cost
from search_spaces.presets import list_presets, resolve_arch
from search_spaces.spec import SpecError

PROG = "nas-cost"


def cost_table(refs: list[str], resolution: int | None, convention: str) -> str:
    lines = [f"{'architecture':<22} {'res':>4} {'params':>12} {'MACs':>16}"]
    for ref in refs:
        arch = resolve_arch(ref)
        c = count_cost(arch, resolution, convention=convention)
        lines.append(f"{arch.name or ref:<22} {resolution or arch.resolution:>4} {c.params:>12,} {c.macs:>16,}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("archs", nargs="*", help="preset names or YAML files [all presets]")
    p.add_argument("--resolution", type=int, help="input size [each architecture's own]")
    p.add_argument("--convention", default="fvcore", choices=CONVENTIONS,
                   help="fvcore: FlopCountAnalysis total; paper: conv + FC MACs only")
    args = p.parse_args(argv)
    if args.resolution is not None and args.resolution < 1:
        print(f"{PROG}: error: --resolution must be >= 1, but got {args.resolution}", file=sys.stderr)
        return EXIT_USAGE
    try:
        print(cost_table(args.archs or list(list_presets()), args.resolution, args.convention))
    except SpecError as exc:
        return error_exit(PROG, exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
