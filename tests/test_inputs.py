"""kernels/inputs.py: the device check of the input's encoding against its CPU reference,
kernels/reference.py's first_refused_ref (the model's use of it: tests/test_model.py)."""

import numpy as np

from lenet.kernels.reference import first_refused_ref


def refused_batches(seed=3):
    """(x, index of its first refused image) in awkward sizes and image shapes: uniform
    over the encoding, with NaN, infinities, values out of range and images without a
    background pixel (0..1) planted; the expected index from where they were planted."""
    r = np.random.default_rng(seed)
    nan, inf = np.nan, np.inf
    for shape, bad, dim in [((1, 1, 32, 32), [], []), ((5, 3, 7), [((4, 2, 6), 1.4)], [1]),
                            ((7, 1, 5, 5), [((6, 0, 0, 0), nan), ((2, 0, 4, 1), inf),
                                            ((3, 0, 0, 0), -inf)], []),
                            ((3, 1, 32, 32), [((0, 0, 0, 0), -0.3)], []),
                            ((9, 1, 32, 32), [((8, 0, 1, 1), 255.0)], [5, 6]),
                            ((40, 1024), [((37, 5), nan)], [33]), ((0, 1, 32, 32), [], [])]:
        x = r.uniform(-0.1, 1.175, shape).astype(np.float32)
        x.reshape(len(x), np.prod(shape[1:]))[:, 0] = -0.1   # a background pixel in each
        for index, value in bad:
            x[index] = value
        for n in dim:   # 0..1: no pixel near the background, every value in range
            x[n] = r.uniform(0.0, 1.0, shape[1:])
        first = min([i[0] for i, _ in bad] + dim) if bad or dim else -1
        yield x, first


def test_first_refused_kernel_matches_reference(monkeypatch):
    # the device check that forward runs on device input, against its CPU reference; the
    # images never come back to the host, and after the first call nothing is allocated
    from numba import cuda

    from lenet.kernels import inputs
    inputs.first_refused(cuda.to_device(np.zeros((1, 4), np.float32)))

    def no_allocation(*args, **kwargs):
        raise AssertionError("first_refused allocated device memory")

    def no_copy(*args, **kwargs):
        raise AssertionError("the images were copied to the host")

    for x, expected in refused_batches():
        assert first_refused_ref(x) == expected, x.shape
        device = cuda.to_device(x)
        device.copy_to_host = no_copy
        with monkeypatch.context() as m:
            for name in ("mapped_array", "device_array", "to_device", "pinned_array"):
                m.setattr(inputs.cuda, name, no_allocation)
            assert inputs.first_refused(device) == expected, x.shape


def test_the_boundaries_are_the_encodings():
    # at the accepted bounds and the background threshold, the kernel and the reference
    # agree value for value (both compare in float32)
    from numba import cuda

    from lenet.kernels import inputs
    from lenet.kernels.architecture import INPUT_ACCEPTED, INPUT_NEAR
    lo, hi, near = (np.float32(v) for v in INPUT_ACCEPTED + (INPUT_NEAR,))
    up, down = (lambda v: np.nextafter(v, np.float32(9))), (lambda v: np.nextafter(v, -9))
    cases = [(lo, True), (down(lo), False), (hi, True), (up(hi), False)]
    x = np.full((len(cases) + 2, 8), 0.5, np.float32)
    for k, (v, _) in enumerate(cases):
        x[k, :2] = v, -0.1
    x[-2, 0], x[-1, 0] = near, up(near)      # the only pixel near the background
    accepted = [ok for _, ok in cases] + [True, False]
    device = cuda.to_device(x)
    for k, ok in enumerate(accepted):
        assert first_refused_ref(x[k:k + 1]) == (-1 if ok else 0), k
        assert inputs.first_refused(device[k:k + 1]) == (-1 if ok else 0), k


def test_real_images_and_their_distortions_are_accepted(mnist_dir, debian_fashion):
    # no false refusal: MNIST's 70,000 digits and Fashion-MNIST's training items as
    # lenet.data.preprocess makes them, and the paper's distortions of MNIST's test set
    from lenet.data import load_dataset, load_mnist, preprocess
    from lenet.kernels.distort import distort_cpu, draw_distortions
    sets = [load_mnist(split, mnist_dir)[0] for split in ("train", "test")]
    sets.append(load_dataset("fashion-mnist", "train", debian_fashion)[0])
    for digits in sets:
        assert first_refused_ref(preprocess(digits)) == -1
    x = preprocess(sets[1])
    distorted = np.empty_like(x)
    distort_cpu(distorted, x, draw_distortions(np.random.default_rng(0), len(x)))
    assert first_refused_ref(distorted) == -1
    assert not np.array_equal(distorted, x)
