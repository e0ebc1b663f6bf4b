"""Plain-PyTorch MeZO: the reference step of princeton-nlp/MeZO (large_models/trainer.py), with z
supplied by the caller (lmfuse's z exported through fill_z) instead of torch.normal.

One step, 4 passes over the parameters (as zo_perturb_parameters / zo_update do it):
    theta += 1 * z * eps;      L+ = loss()
    theta += -2 * z * eps;     L- = loss()
    theta += 1 * z * eps                                     # restore
    g = (L+ - L-) / (2 eps)
    theta -= lr * (g * z + wd * theta)   on decay tensors    # else theta -= lr * (g * z)
"""

import torch


def reference_step(params, decay, zs, eps, lr, wd, loss_fn, g=None):
    """One reference MeZO step on ``params`` (in place); returns (L+, L-, g) as Python floats.

    ``g``: use this projected gradient instead of the one computed from the losses (to compare
    the passes alone, without the 1/eps amplification of loss rounding through g).
    """
    with torch.no_grad():
        for p, z in zip(params, zs):
            p.data = p.data + 1 * z * eps
        lp = loss_fn()
        for p, z in zip(params, zs):
            p.data = p.data + -2 * z * eps
        lm = loss_fn()
        for p, z in zip(params, zs):
            p.data = p.data + 1 * z * eps
        if g is None:
            g = ((lp - lm) / (2 * eps)).item()
        for p, z, d in zip(params, zs, decay):
            if d:
                p.data = p.data - lr * (g * z + wd * p.data)
            else:
                p.data = p.data - lr * (g * z)
    return lp.item(), lm.item(), g
