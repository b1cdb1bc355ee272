"""Random planar affine distortions of training images, as in the paper's distortion
experiment: "combinations of the following planar affine transformations: horizontal
and vertical translations, scaling, squeezing (simultaneous horizontal compression and
vertical elongation, or the reverse), and horizontal shearing". Three versions:
distort_ref (NumPy, float64: the definition), distort_cpu (Numba njit, one thread) and
distort (CUDA: one thread per output pixel (n, y, x)); draw_distortions draws their
parameters. Images are (N,1,32,32), preprocessed (lenet.data.preprocess: background -0.1).

A row (a, b, c, d, e, f) of params maps each output pixel (y, x) to the input point

    x_in = a (x - C) + b (y - C) + C + e,   y_in = c (x - C) + d (y - C) + C + f,

C = 15.5 the centre of the 32x32 image, whose value is read by bilinear interpolation
between the four pixels around it; pixels outside the image count as background. The
row (1, 0, 0, 1, 0, 0) copies the image exactly.

The paper gives no ranges. draw_distortions draws, per pattern (RANGES): with
probability 0.1 no distortion (the paper's distorted training set held the 60,000
originals beside 540,000 distorted patterns); otherwise a translation uniform in
+-2 pixels on each axis, a scale s uniform in [0.9, 1.1], a squeeze q uniform in
[0.9, 1.1] (x times q, y divided by q) and a horizontal shear k uniform in [-0.2, 0.2]
(x += k y), applied as x' = M x + t, M = [[s q, k s / q], [0, s / q]]; the row is M's
inverse and the matching offset. `lenet show distortions` draws examples.

Test: pytest -q tests/test_distort.py
"""


import numpy as np
from numba import cuda, float32, njit

from .architecture import IN_SIZE, INPUT_BACKGROUND
from .common import cdiv, check_device_arrays, device_function, kernel
from .cpu import CACHE

SIZE = IN_SIZE
CENTRE = (SIZE - 1) / 2
BACKGROUND = INPUT_BACKGROUND  # the value of a blank pixel (lenet.data.preprocess's)
BLOCK = 256
RANGES = {"keep": 0.1, "translate": 2.0, "scale": 0.1, "squeeze": 0.1, "shear": 0.2}


def draw_distortions(rng, n, ranges=RANGES):
    """params (n, 6) float32 for n patterns, drawn from `rng` (module docstring)."""
    r = ranges
    tx, ty = rng.uniform(-r["translate"], r["translate"], (2, n))
    s = rng.uniform(1 - r["scale"], 1 + r["scale"], n)
    q = rng.uniform(1 - r["squeeze"], 1 + r["squeeze"], n)
    k = rng.uniform(-r["shear"], r["shear"], n)
    keep = rng.random(n) < r["keep"]
    a, b, d = 1 / (s * q), -k / (s * q), q / s      # the inverse of M
    e, f = -(a * tx + b * ty), -d * ty              # -M^-1 t
    params = np.stack([a, b, np.zeros(n), d, e, f], axis=1)
    params[keep] = (1, 0, 0, 1, 0, 0)
    return params.astype(np.float32)


# ---------------------------------------------------------------- reference

def distort_ref(params, images, background=BACKGROUND):
    """The distorted images (N,1,32,32) float64 (module docstring)."""
    p = np.asarray(params, np.float64)
    img = np.asarray(images, np.float64)[:, 0]
    n = img.shape[0]
    y, x = np.meshgrid(np.arange(SIZE) - CENTRE, np.arange(SIZE) - CENTRE, indexing="ij")
    xin = p[:, 0, None, None] * x + p[:, 1, None, None] * y + CENTRE + p[:, 4, None, None]
    yin = p[:, 2, None, None] * x + p[:, 3, None, None] * y + CENTRE + p[:, 5, None, None]
    x0, y0 = np.floor(xin).astype(np.int64), np.floor(yin).astype(np.int64)
    fx, fy = xin - x0, yin - y0
    batch = np.arange(n)[:, None, None]

    def pixel(yy, xx):
        inside = (yy >= 0) & (yy < SIZE) & (xx >= 0) & (xx < SIZE)
        return np.where(inside, img[batch, np.clip(yy, 0, SIZE - 1), np.clip(xx, 0, SIZE - 1)],
                        background)

    out = ((1 - fy) * ((1 - fx) * pixel(y0, x0) + fx * pixel(y0, x0 + 1))
           + fy * ((1 - fx) * pixel(y0 + 1, x0) + fx * pixel(y0 + 1, x0 + 1)))
    return out[:, None]


# --------------------------------------------------------- one output pixel

def sample(image, p, y, x, background, centre, one):
    """The value of output pixel (y, x) for the parameter row p: bilinear between the
    four input pixels around its input point (those outside count as background).
    y, x, background, centre (CENTRE) and one (1) come in the image's dtype, so that
    float32 stays float32."""
    xc, yc = x - centre, y - centre
    xin = p[0] * xc + p[1] * yc + centre + p[4]
    yin = p[2] * xc + p[3] * yc + centre + p[5]
    fx, fy = xin % one, yin % one  # the fractional parts, in the image's dtype
    x0, y0 = int(xin - fx), int(yin - fy)
    v00 = image[y0, x0] if 0 <= y0 < SIZE and 0 <= x0 < SIZE else background
    v01 = image[y0, x0 + 1] if 0 <= y0 < SIZE and 0 <= x0 + 1 < SIZE else background
    v10 = image[y0 + 1, x0] if 0 <= y0 + 1 < SIZE and 0 <= x0 < SIZE else background
    v11 = image[y0 + 1, x0 + 1] if 0 <= y0 + 1 < SIZE and 0 <= x0 + 1 < SIZE else background
    return (one - fy) * ((one - fx) * v00 + fx * v01) + fy * ((one - fx) * v10 + fx * v11)


sample_cpu = njit(cache=CACHE, error_model="numpy")(sample)
sample_gpu = device_function(sample)


@njit(cache=CACHE, error_model="numpy")
def distort_cpu_loop(out, images, params, background, centre, one):
    coord = np.arange(SIZE).astype(images.dtype)
    for n in range(images.shape[0]):
        image, p, o = images[n, 0], params[n], out[n, 0]
        for y in range(SIZE):
            for x in range(SIZE):
                o[y, x] = sample_cpu(image, p, coord[y], coord[x], background, centre, one)


def distort_cpu(out, images, params, background=BACKGROUND):
    """out (N,1,32,32) = images distorted by params (N,6): NumPy arrays of one dtype."""
    _check_host(out, images, params)
    t = images.dtype.type
    distort_cpu_loop(out, images, params, t(background), t(CENTRE), t(1))


def _check_host(out, images, params):
    n = images.shape[0] if images.ndim == 4 else None
    for name, a, shape in (("images", images, (n, 1, SIZE, SIZE)), ("out", out, images.shape),
                           ("params", params, (n, 6))):
        if a.shape != shape or a.dtype != images.dtype or not a.flags.c_contiguous:
            raise ValueError(f"distort: {name} must be a C-contiguous {images.dtype} array of "
                             f"shape {shape}, not {a.dtype} {a.shape}")


# -------------------------------------------------------------------- CUDA

@kernel("void(float32[:, :, :, ::1], float32[:, :, :, ::1], float32[:, ::1], float32)")
def distort_kernel(out, images, params, background):
    # one thread per output pixel (n, y, x) of the flattened (N, 32 * 32) output
    k = cuda.grid(1)
    if k < out.shape[0] * SIZE * SIZE:
        n, r = k // (SIZE * SIZE), k % (SIZE * SIZE)
        y, x = r // SIZE, r % SIZE
        out[n, 0, y, x] = sample_gpu(images[n, 0], params[n], float32(y), float32(x),
                                     background, float32(CENTRE), float32(1))


def distort(out, images, params, background=BACKGROUND):
    """out (N,1,32,32) = images distorted by params (N,6); float32 device arrays."""
    n = images.shape[0] if len(getattr(images, "shape", ())) == 4 else None
    check_device_arrays("distort", images=(images, (n, 1, SIZE, SIZE)),
                        out=(out, (n, 1, SIZE, SIZE)), params=(params, (n, 6)))
    if n:
        distort_kernel[cdiv(n * SIZE * SIZE, BLOCK), BLOCK](out, images, params,
                                                                   np.float32(background))
