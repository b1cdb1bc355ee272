"""One tolerance per dtype, shared by the tests and the benchmarks.

A result passes when it is finite everywhere (a NaN-poisoned output that a
kernel forgot to write fails) and its relative error ||out - ref|| / ||ref||
is under the bound of its dtype. The reference is computed in float64 from
the same (float32) inputs.
"""

import numpy as np

RELATIVE_ERROR = {
    np.dtype(np.float32): 1e-5,   # float32 arithmetic on sums of up to ~10^5 terms
    np.dtype(np.float64): 1e-12,
}


def relative_error(out, ref):
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    scale = np.linalg.norm(ref)
    return np.linalg.norm(out - ref) / (scale if scale > 0 else 1.0)


def assert_close(out, ref, dtype=np.float32, what="result"):
    """Raise AssertionError unless `out` matches `ref` to the tolerance of `dtype`."""
    out = np.asarray(out)
    ref = np.asarray(ref)
    if out.shape != ref.shape:
        raise AssertionError(f"{what}: shape {out.shape}, expected {ref.shape}")
    if not np.all(np.isfinite(out)):
        bad = np.argwhere(~np.isfinite(out))
        raise AssertionError(f"{what}: {len(bad)} non-finite elements (unwritten?), "
                             f"first at {tuple(int(i) for i in bad[0])}")
    err = relative_error(out, ref)
    bound = RELATIVE_ERROR[np.dtype(dtype)]
    if not err <= bound:
        worst = tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(out - ref)), ref.shape))
        raise AssertionError(f"{what}: relative error {err:.2e} > {bound:.0e}; worst at "
                             f"{worst}: {float(out[worst])!r} vs {float(ref[worst])!r}")
    return err
