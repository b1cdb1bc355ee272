"""tests/fast_sim.py, the faster simulator that tests/conftest.py installs: barriers that
order a block's threads, threads that return early not holding the others back, a failing
thread failing the launch with its own error, threads kept from block to block, no forced
GIL switches within a block, casts and indexing as the simulator's, and all of it in the
tests' child Pythons (tests/sim_site)."""

import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import SIMULATOR
from numba import cuda, float32, float64, int32, uint32

pytestmark = pytest.mark.skipif(not SIMULATOR, reason="a scheduler for the CUDA simulator")

THREADS = 64


@cuda.jit
def tree_sums(out, x):
    # each block sums its THREADS values by halving, a barrier between the steps
    buf = cuda.shared.array(THREADS, float64)
    t = cuda.threadIdx.x
    buf[t] = x[cuda.blockIdx.x, t]
    cuda.syncthreads()
    half = THREADS // 2
    while half > 0:
        if t < half:
            buf[t] += buf[t + half]
        cuda.syncthreads()
        half //= 2
    if t == 0:
        out[cuda.blockIdx.x] = buf[0]


@cuda.jit
def odd_threads_leave(out):
    # the odd threads return at once; the even ones meet at two barriers
    buf = cuda.shared.array(THREADS, float64)
    t = cuda.threadIdx.x
    if t % 2 == 1:
        return
    buf[t] = t
    cuda.syncthreads()
    v = buf[(t + 2) % THREADS]
    cuda.syncthreads()
    buf[t] = v
    cuda.syncthreads()
    out[t] = buf[t]


@cuda.jit
def one_thread_fails(out, bad):
    buf = cuda.shared.array(THREADS, float64)
    t = cuda.threadIdx.x
    buf[t] = 1.0
    cuda.syncthreads()
    if cuda.blockIdx.x == 1 and t == bad:
        out[THREADS + 5] = 1.0     # past the end: IndexError in this thread only
    cuda.syncthreads()
    out[t] = buf[(t + 1) % THREADS]


@cuda.jit
def casts_and_views(out, rows, records):
    # uint32 arithmetic that wraps, float32 rounding, a row view written through, records
    t = cuda.threadIdx.x
    out[t, 0] = uint32(t) - uint32(1)
    out[t, 1] = float32(0.1) * float32(t)
    row = rows[t]
    row[1] = row[0] + int32(t)
    records[t]["b"] = records[t]["a"] * 2


@cuda.jit
def thread_ids(out):
    out[cuda.blockIdx.x, cuda.threadIdx.x] = threading.get_ident()   # run as Python


@cuda.jit
def switch_interval(out):
    out[cuda.threadIdx.x] = sys.getswitchinterval()   # the simulator runs this as Python


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # 0 - 1 wraps
def test_casts_and_indexing_keep_the_simulators_semantics():
    # against NumPy, what the unpatched simulator computes with: NumPy scalars of the
    # cast's type, views of rows, fields of records
    n = 4
    out, rows = np.zeros((n, 2)), np.arange(2 * n, dtype=np.int64).reshape(n, 2)
    records = np.zeros(n, dtype=[("a", np.int32), ("b", np.int32)])
    records["a"] = np.arange(n) + 5
    casts_and_views[1, n](out, rows, records)
    t = np.arange(n)
    np.testing.assert_array_equal(out[:, 0], (t.astype(np.uint32) - np.uint32(1)))
    np.testing.assert_array_equal(out[:, 1], np.float32(0.1) * t.astype(np.float32))
    np.testing.assert_array_equal(rows[:, 1], 2 * t + t)
    np.testing.assert_array_equal(records["b"], 2 * (t + 5))
    assert type(uint32(7)) is np.uint32 and type(float32(7)) is np.float32
    assert str(float32(int32, int32)) == "(int32, int32) -> float32"   # still a signature


def test_barriers_order_the_steps_of_a_reduction():
    x = np.random.default_rng(0).uniform(-1, 1, (3, THREADS))
    out = np.zeros(3)
    tree_sums[3, THREADS](out, x)
    np.testing.assert_allclose(out, x.sum(axis=1), rtol=1e-12)


def test_threads_that_return_do_not_hold_the_barrier():
    out = np.full(THREADS, -1.0)
    odd_threads_leave[1, THREADS](out)
    even = np.arange(0, THREADS, 2)
    np.testing.assert_array_equal(out[even], (even + 2) % THREADS)
    assert np.all(out[1::2] == -1.0)


def test_a_failing_thread_fails_the_launch_with_its_own_error():
    out = np.zeros(THREADS)
    with pytest.raises(IndexError, match=r"^tid=\[5, 0, 0\] ctaid=\[1, 0, 0\]"):
        one_thread_fails[2, THREADS](out, 5)
    # the next launch runs normally
    one_thread_fails[2, THREADS](out, THREADS)
    assert np.all(out == 1.0)


def test_the_main_threads_blocks_run_on_kept_threads_and_others_leave_none():
    first, second = np.zeros((3, THREADS), np.uint64), np.zeros((1, THREADS), np.uint64)
    thread_ids[3, THREADS](first)
    thread_ids[1, THREADS](second)
    # a block's THREADS threads are distinct, and every block and launch has the same ones
    assert len(set(first[0])) == THREADS
    assert all(list(row) == list(first[0]) for row in (*first, *second))
    assert set(first[0]) <= {t.ident for t in threading.enumerate()}   # alive, kept
    assert threading.main_thread() is threading.current_thread()
    # a launch from another thread: threads of its own, ended when it returns
    before, other = set(threading.enumerate()), np.zeros((2, THREADS), np.uint64)
    launcher = threading.Thread(target=lambda: thread_ids[2, THREADS](other))
    launcher.start()
    launcher.join()
    assert len(set(other[0])) == THREADS and not set(other.ravel()) & set(first[0])
    assert set(threading.enumerate()) == before


def test_a_block_has_no_forced_gil_switches_and_the_interval_comes_back():
    import fast_sim

    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.004)
        out = np.zeros(THREADS)
        switch_interval[2, THREADS](out)
        assert np.all(out == 1.0) and sys.getswitchinterval() == 0.004
        with fast_sim._no_forced_switches(), fast_sim._no_forced_switches():  # nested: once
            assert sys.getswitchinterval() == 1.0
        assert sys.getswitchinterval() == 0.004
    finally:
        sys.setswitchinterval(before)


def test_child_pythons_run_the_scheduler_and_others_pay_nothing():
    # tests/sim_site/sitecustomize.py, on the children's PYTHONPATH: installed when the
    # simulator's kernel module is imported, and nothing imported before that
    code = ("import sys; print('numba' in sys.modules); "
            "from numba.cuda.simulator import kernel; print(kernel.BlockManager.run.__module__)")
    code += "; from numba import uint32; print(type(uint32).__call__.__module__)"
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert got == ["False", "fast_sim", "fast_sim"]
