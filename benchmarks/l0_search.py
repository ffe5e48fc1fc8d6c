"""One step of the search for the sparsity setting at which a dictionary's L0 reaches a target,
shared by the benchmarks that compare methods at matched L0."""

from __future__ import annotations

import math


def secant_step(points: list[tuple[float, float]], target: float, first_slope: float) -> float:
    """The setting at which L0 should reach `target`, from the tries so far (setting, L0): a secant on
    log L0 through the two tries closest to the target. `first_slope` (d log L0 / d setting) is used
    from a single try; its sign is the direction L0 moves, so a fitted slope of the other sign, or
    flatter than 0.1, is replaced by 0.1 of that sign."""
    near = sorted(points, key=lambda p: abs(math.log(p[1] / target)))[:2]
    (x1, l1), *rest = near
    slope = first_slope
    if rest and rest[0][0] != x1 and rest[0][1] != l1:
        x2, l2 = rest[0]
        sign = math.copysign(1.0, first_slope)
        slope = sign * max(0.1, sign * (math.log(l1) - math.log(l2)) / (x1 - x2))
    return x1 + (math.log(target) - math.log(l1)) / slope
