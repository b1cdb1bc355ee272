"""kernels/inputs.py: the device check for NaN and infinite images against its CPU
reference (the model's use of it: tests/test_model.py)."""

import numpy as np


def test_first_nonfinite_kernel_matches_reference(monkeypatch):
    # the device check that forward runs on device input, against its CPU reference,
    # in awkward sizes and image shapes; the images never come back to the host, and
    # after the first call nothing is allocated
    from numba import cuda

    from lenet.kernels import inputs
    from lenet.kernels.inputs import first_nonfinite, first_nonfinite_ref
    first_nonfinite(cuda.to_device(np.zeros((1, 4), np.float32)))

    def no_allocation(*args, **kwargs):
        raise AssertionError("first_nonfinite allocated device memory")

    r = np.random.default_rng(3)
    for shape, bad in [((1, 1, 32, 32), []), ((5, 3, 7), [(4, 2, 6)]),
                       ((7, 1, 5, 5), [(6, 0, 0, 0), (2, 0, 4, 1), (3, 0, 0, 0)]),
                       ((3, 1, 32, 32), [(0, 0, 0, 0)]), ((0, 1, 32, 32), [])]:
        x = r.standard_normal(shape).astype(np.float32)
        for k, index in enumerate(bad):
            x[index] = (np.nan, np.inf, -np.inf)[k % 3]
        device = cuda.to_device(x)

        def no_copy(*args, **kwargs):
            raise AssertionError("the images were copied to the host")

        device.copy_to_host = no_copy
        expected = first_nonfinite_ref(x)
        assert expected == (min(i[0] for i in bad) if bad else -1)
        with monkeypatch.context() as m:
            for name in ("mapped_array", "device_array", "to_device", "pinned_array"):
                m.setattr(inputs.cuda, name, no_allocation)
            assert first_nonfinite(device) == expected, shape
