"""Affine distortions (kernels/distort.py): the reference against maps whose result is
known exactly, the compiled CPU version and the CUDA kernel (in the simulator when
there is no GPU) against the reference, the drawn parameters against their ranges,
and a training pass with distortions against one on the same images distorted first."""

import numpy as np
import pytest
from conftest import SIMULATOR

from lenet import LeNet5, data
from lenet.kernels import distort as d
from lenet.kernels.tolerance import assert_close
from lenet.train import Trainer

IDENTITY = (1, 0, 0, 1, 0, 0)


def images(n, seed=0):
    return np.random.default_rng(seed).uniform(-0.1, 1.175, (n, 1, 32, 32)).astype(np.float32)


def rows(*params):
    return np.array(params, np.float32)


def test_reference_moves_pixels_where_the_map_says():
    x = images(1)[:, 0]
    # identity; one pixel right and two up (x_in = x - 1, y_in = y + 2); mirror x -> 31 - x
    out = d.distort_ref(rows(IDENTITY, (1, 0, 0, 1, -1, 2), (-1, 0, 0, 1, 0, 0)),
                        np.repeat(x[:, None], 3, axis=0))[:, 0]
    np.testing.assert_array_equal(out[0], x[0])
    np.testing.assert_array_equal(out[1][:30, 1:], x[0][2:, :31])
    assert np.all(out[1][:, 0] == d.BACKGROUND) and np.all(out[1][30:] == d.BACKGROUND)
    np.testing.assert_array_equal(out[2], x[0][:, ::-1])
    # half a pixel right: each pixel the mean of two neighbours (bilinear)
    half = d.distort_ref(rows((1, 0, 0, 1, -0.5, 0)), x[:, None])[0, 0]
    x64 = x[0].astype(np.float64)
    np.testing.assert_allclose(half[:, 1:], (x64[:, 1:] + x64[:, :-1]) / 2, rtol=1e-12)


def test_drawn_rows_invert_the_documented_forward_map():
    rng = np.random.default_rng(5)
    p = d.draw_distortions(rng, 20000).astype(np.float64)
    a, b, c, dd, e, f = p.T
    assert np.all(c == 0)
    s, q = 1 / np.sqrt(a * dd), np.sqrt(dd / a)       # a = 1 / (s q), d = q / s
    k = -b / a                                        # b = -k / (s q)
    ty, tx = -f / dd, -(e + b * (-f / dd)) / a        # (e, f) = -M^-1 t
    r = d.RANGES
    eps = 1e-5
    assert np.all(np.abs(s - 1) <= r["scale"] + eps) and np.all(np.abs(q - 1) <= r["squeeze"] + eps)
    assert np.all(np.abs(k) <= r["shear"] + eps)
    assert np.all(np.abs(tx) <= r["translate"] + eps) and np.all(np.abs(ty) <= r["translate"] + eps)
    kept = np.all(p == IDENTITY, axis=1).mean()
    assert abs(kept - r["keep"]) < 0.01, kept
    # the forward map x' = M x + t sends each row's input point back to the output pixel
    i = np.flatnonzero(~np.all(p == IDENTITY, axis=1))[:50]
    for n in i:
        m = np.array([[s[n] * q[n], k[n] * s[n] / q[n]], [0, s[n] / q[n]]])
        out_xy = np.array([3.0, -7.0])  # relative to the centre
        in_xy = p[n, [0, 1]] @ out_xy + p[n, 4], p[n, [2, 3]] @ out_xy + p[n, 5]
        np.testing.assert_allclose(m @ np.array(in_xy) + (tx[n], ty[n]), out_xy, atol=1e-4)
    again = d.draw_distortions(np.random.default_rng(5), 20000)
    np.testing.assert_array_equal(again, p.astype(np.float32))  # seeded: reproducible


def awkward_rows(n, seed):
    """Drawn rows, plus the identity and a map that sends most pixels off the image."""
    p = d.draw_distortions(np.random.default_rng(seed), n)
    p[0], p[-1] = IDENTITY, (0.5, 0.7, -0.3, 1.5, 12.0, -9.0)
    return p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_matches_reference(dtype):
    n = 37
    x, p = images(n, seed=1).astype(dtype), awkward_rows(n, seed=2).astype(dtype)
    out = np.full_like(x, np.nan)
    d.distort_cpu(out, x, p)
    assert_close(out, d.distort_ref(p, x), dtype=dtype, what="distorted")
    np.testing.assert_array_equal(out[0], x[0])


def test_gpu_kernel_matches_reference():
    from numba import cuda
    n = 2 if SIMULATOR else 4099
    x, p = images(n, seed=3), awkward_rows(n, seed=4)
    out = cuda.to_device(np.full_like(x, np.nan))
    d.distort(out, cuda.to_device(x), cuda.to_device(p))
    got = out.copy_to_host()
    assert_close(got, d.distort_ref(p, x), what="distorted")
    np.testing.assert_array_equal(got[0], x[0])


def test_launchers_refuse_what_does_not_fit():
    x = images(3)
    with pytest.raises(ValueError, match=r"params must be a C-contiguous float32 array of "
                                         r"shape \(3, 6\)"):
        d.distort_cpu(np.empty_like(x), x, np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="distort: images is a host array"):
        d.distort(np.empty_like(x), x, np.zeros((3, 6), np.float32))


def test_a_pass_with_distortions_trains_on_freshly_distorted_patterns():
    # the pass distorts every pattern with rows drawn from its own stream (seed, 1);
    # the same pass without distortions on the images distorted beforehand takes the
    # same steps
    n, seed = 12, 3
    x, labels = images(n, seed=6), np.random.default_rng(7).integers(0, 10, n)
    p = d.draw_distortions(np.random.default_rng([seed, 1]), n)
    before = np.empty_like(x)
    d.distort_cpu(before, x, p)
    a, b = LeNet5(seed=2, init="lush"), LeNet5(seed=2, init="lush")
    Trainer(a, x, labels, recipe="paper", seed=seed, mu=0.5, distort=True).train_pass()
    Trainer(b, before, labels, recipe="paper", seed=seed, mu=0.5).train_pass()
    pa, pb = a.parameters(), b.parameters()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
    # and the next pass draws new distortions
    t = Trainer(LeNet5(seed=2, init="lush"), x, labels, recipe="paper", seed=seed,
                distort=True)
    first = t._pass_images().copy()
    assert not np.array_equal(t._pass_images(), first)
    # with no seed (a fresh run each time, as documented) as well
    t = Trainer(LeNet5(seed=2, init="lush"), x, labels, recipe="paper", seed=None,
                distort=True)
    assert not np.array_equal(t._pass_images(), x)


def test_the_gpu_trainer_distorts_on_the_device_as_the_cpu_one_does():
    # the pass's images: rows drawn on the host, uploaded, distorted by the kernel into
    # a device buffer (no image leaves the device); the CPU trainer draws the same rows
    n = 2 if SIMULATOR else 1000
    x, labels = images(n, seed=8), np.random.default_rng(9).integers(0, 10, n)
    cpu = Trainer(LeNet5(seed=1, init="lush"), x, labels, recipe="paper", seed=4, distort=True)
    gpu = Trainer(LeNet5(device="gpu"), x, labels, recipe="paper", seed=4, distort=True)
    on_device = gpu._pass_images()
    assert hasattr(on_device, "copy_to_host") and on_device is gpu.distorted
    assert_close(on_device.copy_to_host(), cpu._pass_images().astype(np.float64),
                 what="distorted pass images")


def test_a_pixel_from_outside_is_preprocess_background():
    # 40 pixels to the right: every output pixel reads outside the image
    blank = data.preprocess(np.zeros((1, 28, 28), np.uint8))
    out = d.distort_ref(rows((1, 0, 0, 1, 40, 0)), images(1))
    np.testing.assert_array_equal(out.astype(np.float32), blank)
