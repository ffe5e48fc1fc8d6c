"""One step of the search for the sparsity setting at which a dictionary's L0 reaches a target,
shared by the benchmarks that compare methods at matched L0."""

from __future__ import annotations

import math


def secant_step(points: list[tuple[float, float]], target: float, first_slope: float) -> float:
    """The next setting to try, from the tries so far (setting, L0), by secants on log L0.

    Once tries lie on both sides of the target, the step interpolates between the closest one below
    and the closest one above, and lands in the inner 60% of that bracket, so every step narrows it
    (L0 can jump fivefold between two close settings). Before that it extrapolates from the two
    tries closest to the target; `first_slope` (d log L0 / d setting) is used from a single try, and
    its sign is the direction L0 moves, so a fitted slope of the other sign, or flatter than 0.1, is
    replaced by 0.1 of that sign."""
    below = [p for p in points if p[1] < target]
    above = [p for p in points if p[1] > target]
    if below and above:
        (xb, lb), (xa, la) = max(below, key=lambda p: p[1]), min(above, key=lambda p: p[1])
        fraction = (math.log(target) - math.log(lb)) / (math.log(la) - math.log(lb))
        return xb + min(0.8, max(0.2, fraction)) * (xa - xb)
    near = sorted(points, key=lambda p: abs(math.log(p[1] / target)))[:2]
    (x1, l1), *rest = near
    slope = first_slope
    if rest and rest[0][0] != x1 and rest[0][1] != l1:
        x2, l2 = rest[0]
        sign = math.copysign(1.0, first_slope)
        slope = sign * max(0.1, sign * (math.log(l1) - math.log(l2)) / (x1 - x2))
    return x1 + (math.log(target) - math.log(l1)) / slope
