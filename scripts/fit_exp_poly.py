#!/usr/bin/env python3
"""The coefficients of lmf_lg_exp_neg's polynomial (kernels/common/logits_math.h): e^r on
[-ln 2 / 2, ln 2 / 2] as 1 + r + c2 r^2 + ... + c6 r^6, with c2 .. c6 chosen for the least largest
relative error over a grid of 6,001 evenly spaced and 2,001 Chebyshev points (a linear program:
minimise t subject to |p(r) - e^r| / e^r <= t), then rounded to fp32. Prints them as C hex floats.

Needs Debian's python3-scipy and python3-mpmath (run with /usr/bin/python3). The grid reaches 0.05%
past ln 2 / 2, where n rounded from one FMA can leave r."""
import mpmath as mp
import numpy as np
from scipy.optimize import linprog

DEG = 6
SCALE = 1e9  # the errors are ~1e-9: scaled so the solver's tolerances do not round them to 0


def main():
    mp.mp.dps = 40
    half = float(mp.log(2) / 2) * 1.0005
    r = np.concatenate([np.linspace(-half, half, 4001), np.cos(np.linspace(0, np.pi, 2001)) * half])
    e = np.array([float(mp.exp(mp.mpf(x))) for x in r])
    a_ub, b_ub = [], []
    for sign in (1, -1):  # sign * (p - e) / e <= t
        cols = [SCALE * sign * r**i / e for i in range(2, DEG + 1)] + [-np.ones_like(r)]
        a_ub.append(np.stack(cols, axis=1))
        b_ub.append(SCALE * sign * (e - (1 + r)) / e)
    cost = np.zeros(DEG)
    cost[-1] = 1.0
    res = linprog(cost, A_ub=np.concatenate(a_ub), b_ub=np.concatenate(b_ub), bounds=[(None, None)] * DEG,
                  method="highs", options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10})
    if res.status != 0:
        raise SystemExit(f"linprog: {res.message}")
    print(f"largest relative error before rounding: {res.x[-1] / SCALE:.3g}")
    for i, c in enumerate(res.x[:-1], start=2):
        print(f"c{i} = {float(np.float32(c)).hex().replace('0000000p', 'p')}f")


if __name__ == "__main__":
    main()
