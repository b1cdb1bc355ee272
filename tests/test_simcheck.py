"""The simulator's race and bounds check (tests/simcheck.py).

Faults planted in small kernels are caught, each with the kernel, the array, the index
and the threads named; correct kernels (barriers, atomics, grid strides) pass and compute
what NumPy does; with the check off the same faults go unseen (the simulator hides them).
Then the three fused kernels (the forward pass, the training step, the per-pattern SDLM
kernel) run under the check at tiny sizes: no fault, and bit for bit the results of the
same launch unchecked. Simulator only: the check hooks the simulator's threads.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import simcheck
from conftest import SIMULATOR
from numba import cuda, float32

from lenet import LeNet5
from lenet.kernels import common, reference, sdlm
from lenet.kernels import forward as fw
from lenet.kernels import forward_pieces as L
from lenet.kernels import train_step as ts
from lenet.kernels.architecture import C3_TABLE, LOSS_KINDS, RBF_CENTERS
from lenet.kernels.backward_pieces import c3_out_table
from lenet.kernels.common import Kernel, u32
from lenet.kernels.tolerance import assert_close
from lenet.workspace import Workspace

pytestmark = pytest.mark.skipif(not SIMULATOR, reason="simcheck hooks the CUDA simulator "
                                "(on a GPU the tool is compute-sanitizer)")


def checked(signature):
    """A kernels.common.Kernel, as @kernel makes it, but not listed for the compile census."""
    return lambda fn: Kernel(fn, [signature], {}, {})


def fault(launch, *args):
    """The SimcheckError message of launch(*args) under the check."""
    with simcheck.checking(), pytest.raises(simcheck.SimcheckError) as info:
        launch(*args)
    return str(info.value)


def threads(message):
    """The (block, thread) x indices a message names."""
    return {(int(b), int(t)) for b, t in
            re.findall(r"block \((\d+), 0, 0\) thread \((\d+), 0, 0\)", message)}


def device(a):
    return cuda.to_device(np.ascontiguousarray(a))


def seeded(n, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, n).astype(np.float32)


# ------------------------------------------------------------------ planted faults

@checked("void(float32[::1])")
def two_writers(out):
    # threads 2 and 5 both write slot 1 between the same two barriers
    buf = cuda.shared.array(8, float32)
    t = cuda.threadIdx.x
    buf[t] = float32(t)
    cuda.syncthreads()  # every slot written
    if t == 2 or t == 5:
        buf[1] = float32(t)
    cuda.syncthreads()  # (too late: the two writes above race)
    out[t] = buf[t]


def test_two_threads_writing_one_shared_slot():
    msg = fault(two_writers[1, 8], device(np.zeros(8, np.float32)))
    assert "test_simcheck.two_writers: race on shared array buf[1] (test_simcheck.py:" in msg
    assert re.search(r"\): a write by block .* and a write by block", msg)
    assert threads(msg) == {(0, 2), (0, 5)}
    assert "in one barrier interval (no cuda.syncthreads() between them)" in msg


def neighbour_read(barrier):
    # thread t writes slot t; thread 4 then reads slot 3 (thread 3's): with or without a
    # barrier between
    @checked("void(float32[::1])")
    def neighbour(out):
        buf = cuda.shared.array(8, float32)
        t = cuda.threadIdx.x
        buf[t] = float32(10 + t)
        if barrier:
            cuda.syncthreads()  # every thread's slot is written
        if t == 4:
            out[0] = buf[3]
    return neighbour


def test_a_read_of_another_threads_write_with_no_barrier_between():
    msg = fault(neighbour_read(False)[1, 8], device(np.zeros(1, np.float32)))
    assert "race on shared array buf[3]" in msg
    assert re.search(r"a (read|write) by .* and a (read|write) by", msg)
    assert "a read by" in msg and "a write by" in msg
    assert threads(msg) == {(0, 3), (0, 4)}


def test_the_same_read_after_a_barrier_passes():
    out = device(np.zeros(1, np.float32))
    with simcheck.checking():
        neighbour_read(True)[1, 8](out)
    assert out.copy_to_host()[0] == 13


@checked("void(float32[::1], float32[::1])")
def shift_right(out, x):
    # out[t] = x[t - 1]: thread 0 reads x[-1]
    t = cuda.threadIdx.x
    out[t] = x[t - 1]


def test_a_negative_index():
    x = seeded(8)
    msg = fault(shift_right[1, 8], device(np.zeros(8, np.float32)), device(x))
    assert msg == ("simcheck: test_simcheck.shift_right: negative index -1 in argument x[-1] "
                   "(x: shape (8,)) by block (0, 0, 0) thread (0, 0, 0)")
    out = device(np.zeros(8, np.float32))   # unchecked, NumPy wraps it: out[0] = x[7]
    with simcheck.checking(False):
        shift_right[1, 8](out, device(x))
    np.testing.assert_array_equal(out.copy_to_host(), np.roll(x, 1))


@checked("void(float32[::1])")
def local_negative(out):
    # a register tile indexed one below its start by thread 3
    acc = cuda.local.array(4, float32)
    t = cuda.threadIdx.x
    for i in range(4):
        acc[i] = float32(i)
    i = t % 4
    if t == 3:
        i -= 4
    out[t] = acc[i]


def test_a_negative_index_into_a_local_array():
    msg = fault(local_negative[1, 6], device(np.zeros(6, np.float32)))
    assert "local_negative: negative index -1 in local array acc[-1]" in msg
    assert "(acc: shape (4,), test_simcheck.py:" in msg and threads(msg) == {(0, 3)}


@checked("void(float32[::1])")
def tile_overrun(out):
    # a 2x8 tile; thread t writes tile[0, t + 1], so thread 7 writes [0, 8] (on a GPU,
    # tile[1, 0], thread 0's other element)
    tile = cuda.shared.array((2, 8), float32)
    t = cuda.threadIdx.x
    tile[1, t] = float32(0.0)
    tile[0, t + 1] = float32(t)
    cuda.syncthreads()  # the tile is written
    out[t] = tile[0, t]


def test_an_index_past_the_end_of_a_dimension():
    msg = fault(tile_overrun[1, 8], device(np.zeros(8, np.float32)))
    assert ("tile_overrun: index 8 past the end of dimension 1 (length 8) in shared array "
            "tile[0, 8] (tile: shape (2, 8), test_simcheck.py:") in msg
    assert threads(msg) == {(0, 7)}


@checked("void(float32[::1], float32[::1])")
def view_overrun(out, x):
    # the last 3 elements of x as a view, read by threads 0..3
    tail = x[5:]
    t = cuda.threadIdx.x
    out[t] = tail[t]


def test_an_index_past_the_end_of_a_view():
    msg = fault(view_overrun[1, 4], device(np.zeros(4, np.float32)), device(seeded(8)))
    assert msg.endswith("view_overrun: index 3 past the end of dimension 0 (length 3) in "
                        "argument x[5:][3] (x: shape (8,)) by block (0, 0, 0) thread (3, 0, 0)")


@checked("void(float32[::1])")
def wrapped_unsigned(x):
    # x[t - 1] as an unsigned index (kernels.common.u32): for t = 0 it wraps to 2^32 - 1
    t = cuda.threadIdx.x
    x[t] = x[u32(t - 1)] if t == 0 else x[t]


def test_a_wrapped_unsigned_index_is_past_the_end():
    msg = fault(wrapped_unsigned[1, 2], device(seeded(2)))
    assert "index 4294967295 past the end of dimension 0 (length 2) in argument x[" in msg


@checked("void(float32[::1], float32[::1])")
def shift_in_place(out, x):
    # out[t] = x[t] where x is out shifted by one element (two views of one buffer):
    # thread t reads the element that thread t + 1 writes
    t = cuda.threadIdx.x
    out[t] = x[t]


def test_two_arguments_that_view_one_buffer_are_one_array():
    buf = device(seeded(9))
    msg = fault(shift_in_place[1, 8], buf[:8], buf[1:])
    found = re.search(r"race on argument (out|x)\[(\d)\]", msg)
    k = int(found[2]) + (found[1] == "x")      # buffer element k: thread k writes it
    assert threads(msg) == {(0, k - 1), (0, k)}, msg
    assert "a read by" in msg and "a write by" in msg

@checked("void(float32[::1], float32[::1])")
def plain_block_sums(total, x):
    # thread 0 of each block adds its block's element to total[0] with a plain +=:
    # blocks are not ordered, so block 1's read races with block 0's write
    if cuda.threadIdx.x == 0:
        total[0] += x[cuda.blockIdx.x]


@checked("void(float32[::1], float32[::1])")
def atomic_block_sums(total, x):
    # the same with an atomic add: atomics do not race with each other
    if cuda.threadIdx.x == 0:
        cuda.atomic.add(total, 0, x[cuda.blockIdx.x])


@checked("void(float32[::1], float32[::1])")
def atomic_then_read(total, x):
    # the atomic adds, and the last block reads the total with a plain load: a race
    if cuda.threadIdx.x == 0:
        cuda.atomic.add(total, 0, x[cuda.blockIdx.x])
        if cuda.blockIdx.x == cuda.gridDim.x - 1:
            x[0] = total[0]


@checked("void(float32[::1], float32[::1])")
def zeroed_in_the_kernel(total, x):
    # block 0 zeroes the total that every block adds to atomically: nothing orders the
    # zeroing before the other blocks' adds
    if cuda.threadIdx.x == 0:
        if cuda.blockIdx.x == 0:
            total[0] = float32(0.0)
        cuda.atomic.add(total, 0, x[cuda.blockIdx.x])


def test_a_global_race_between_blocks():
    x = device(seeded(3))
    msg = fault(plain_block_sums[3, 4], device(np.zeros(1, np.float32)), x)
    assert msg == ("simcheck: test_simcheck.plain_block_sums: race on argument total[0]: a "
                   "write by block (0, 0, 0) thread (0, 0, 0) and a read by block (1, 0, 0) "
                   "thread (0, 0, 0) in different blocks (nothing orders the blocks of a "
                   "launch)")
    msg = fault(atomic_then_read[3, 4], device(np.zeros(1, np.float32)), x)
    assert re.search(r"race on argument total\[0\]: an atomic by block \([01], 0, 0\) thread "
                     r"\(0, 0, 0\) and a read by block \(2, 0, 0\) thread \(0, 0, 0\) in "
                     r"different blocks", msg)
    msg = fault(zeroed_in_the_kernel[3, 4], device(np.zeros(1, np.float32)), x)
    assert "race on argument total[0]: a write by block (0, 0, 0) thread (0, 0, 0) and an " \
           "atomic by block (1, 0, 0) thread (0, 0, 0) in different blocks" in msg


def test_atomics_from_every_block_pass():
    x, total = seeded(3, seed=1), device(np.zeros(1, np.float32))
    with simcheck.checking() as tally:
        atomic_block_sums[3, 4](total, device(x))
    assert total.copy_to_host()[0] == pytest.approx(x.astype(np.float64).sum(), rel=1e-6)
    assert tally.kernels["test_simcheck.atomic_block_sums"]["global"] == 4


# ------------------------------------------------------------ correct kernels pass

BLOCK = 16


@checked("void(float32[::1], float32[::1], float32[::1])")
def block_sums(sums, total, x):
    # one thread per element, grid-striding; each block sums its threads' shares in
    # shared memory by halving, then writes its sum and adds it to the total atomically
    buf = cuda.shared.array(BLOCK, float32)
    t = cuda.threadIdx.x
    acc = float32(0.0)
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        acc += x[i]
    buf[t] = acc
    cuda.syncthreads()  # every thread's share is in buf
    half = BLOCK // 2
    while half > 0:
        if t < half:
            buf[t] += buf[t + half]
        cuda.syncthreads()  # this level's sums are stored before the next reads them
        half //= 2
    if t == 0:
        sums[cuda.blockIdx.x] = buf[0]
        cuda.atomic.add(total, 0, buf[0])
    cuda.syncthreads()  # thread 0's sum is stored (a barrier orders global memory too)
    if t == BLOCK - 1:   # another thread reads and rewrites it: ordered, no race
        sums[cuda.blockIdx.x] = sums[cuda.blockIdx.x] + float32(0.0)


def test_correct_kernels_pass_and_compute_what_numpy_does():
    x = seeded(101, seed=2)
    sums, total, xd = device(np.zeros(3, np.float32)), device(np.zeros(1, np.float32)), \
        device(x)
    with simcheck.checking() as tally:
        block_sums[3, BLOCK](sums, total, xd)
    stride = 3 * BLOCK
    want = [sum(x[i].astype(np.float64) for i in range(b * BLOCK, 101)
                if i % stride // BLOCK == b) for b in range(3)]
    np.testing.assert_allclose(sums.copy_to_host(), want, rtol=1e-5)
    assert total.copy_to_host()[0] == pytest.approx(sum(want), rel=1e-5)
    counts = tally.kernels["test_simcheck.block_sums"]
    assert counts == {"launches": 1, "shared": BLOCK, "global": 101 + 3 + 1, "local": 0}


def test_off_the_check_is_not_called(monkeypatch):
    def refuse(*args):
        raise AssertionError("simcheck.launch called with the check off")
    monkeypatch.setattr(simcheck, "launch", refuse)
    out = device(np.zeros(8, np.float32))
    with simcheck.checking(False):
        two_writers[1, 8](out)     # the race goes unseen
    got = out.copy_to_host()
    assert got[1] in (2, 5) and np.array_equal(np.delete(got, 1), np.delete(np.arange(8), 1))


def test_the_environment_variable_turns_it_on():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for value, want in (("1", "True"), ("0", "False"), ("", "False")):
        env = dict(os.environ, LENET_SIMCHECK=value)
        got = subprocess.run([sys.executable, "-c", "import simcheck as s, lenet.kernels.common "
                              "as c; print(s.active and c.launch_check is s.launch)"],
                             cwd=os.path.join(root, "tests"), env=env, capture_output=True,
                             text=True, check=True).stdout.strip()
        assert got == want, f"LENET_SIMCHECK={value!r}"


# --------------------------------------------- the fused kernels under the check

def active(tally, name):
    """The counts of kernel `name` in a Tally: launched, and elements were checked."""
    counts = tally.kernels[name]
    assert counts["launches"] >= 1 and counts["global"] > 0, counts
    return counts


@pytest.fixture(scope="module")
def nets():
    """A seeded model's float32 parameters and them in float64 (for the reference)."""
    start = LeNet5(seed=5, init="sqrt-fan-in").parameters()
    return start, {k: v.astype(np.float64) for k, v in start.items()}


SHAPES = dict(L.PARAMETER_SHAPES)     # parameter name -> shape, in the flat buffer's order


def flat(params):
    return np.concatenate([params[name].ravel() for name in SHAPES])


def tables():
    return (L.c3_table(C3_TABLE), c3_out_table(C3_TABLE),
            cuda.to_device(RBF_CENTERS.astype(np.float32).ravel()))


def images(n, seed):
    return np.random.default_rng(seed).uniform(-0.1, 1.175, (n, 1, 32, 32)).astype(np.float32)


def test_fused_forward_has_no_race_or_bad_index(nets):
    # 9 images in 2 blocks: block 0 takes groups 0 and 2 (the last one partial) in turn
    start, p64 = nets
    n, (table, _, centers) = 9, tables()
    x = images(n, seed=11)
    pen = device(np.full((n, L.N_CLASSES), np.nan, np.float32))
    cls = device(np.full(n, -1, np.int32))
    with simcheck.checking() as tally:
        fw.forward_kernel[2, fw.THREADS](pen, cls, device(x.reshape(n, -1)),
                                         device(flat(start)), table, centers)
    counts = active(tally, "kernels.forward.forward_kernel")
    assert counts["shared"] > 0 and counts["local"] > 0
    want = reference.forward_ref(p64, x)["penalties"]
    assert_close(pen.copy_to_host(), want, what="penalties")
    np.testing.assert_array_equal(cls.copy_to_host(), pen.copy_to_host().argmin(axis=1))


def test_fused_training_step_has_no_race_or_bad_index(nets):
    # Workspace.step (the three kernels, as training launches them) on 5 of 7 images
    # through a shuffled index: two groups (4 + 1) in one block, no barrier between them;
    # C5's and F6's sums in two splits; gradients stored (mode "store"), MAP loss
    start, p64 = nets
    x, labels = images(7, seed=12), np.array([3, 1, 4, 1, 5, 9, 2], np.int32)
    index, first, count = np.array([6, 2, 0, 5, 3, 1, 4], np.int32), 1, 5
    picked = index[first:first + count]
    j = float(np.floor(reference.forward_ref(p64, x[picked])["penalties"].min()))
    table, out_table, centers = tables()
    ws = Workspace(count, centers, table, out_table, blocks=1, splits=2, split_images=2)
    params, grads = device(flat(start)), device(np.full(L.PARAMETERS_LEN, np.nan, np.float32))
    velocity, rates = device(np.zeros(L.PARAMETERS_LEN, np.float32)), \
        device(np.zeros(L.PARAMETERS_LEN, np.float32))
    stats = device(np.zeros(2))
    with simcheck.checking() as tally:
        ws.step(params, grads, velocity, rates, stats, device(x.reshape(7, -1)),
                device(labels), device(index), first, count, np.int32(LOSS_KINDS["map"]), j,
                np.int32(1), np.int32(ts.MODES["store"]), 0.0, 0.0)
    assert active(tally, "kernels.train_step.batch_kernel")["shared"] > 0
    assert active(tally, "kernels.train_step.dense_grads_kernel")["shared"] > 0
    active(tally, "kernels.train_step.finish_kernel")
    fwd = reference.forward_ref(p64, x[picked], labels[picked], "map", j)
    loss, want = fwd["loss"], reference.backward_ref(p64, fwd)
    got = grads.copy_to_host()
    for name, shape in SHAPES.items():
        at = L.PARAMETER_AT[name]
        assert_close(got[at:at + int(np.prod(shape))].reshape(shape), want[name],
                     what=f"gradient {name}")
    assert stats.copy_to_host()[0] / count == pytest.approx(loss, rel=1e-5)


def test_per_pattern_sdlm_kernel_has_no_race_or_bad_index(nets):
    # two runs (two blocks) of two patterns each (the second waits on the first's steps):
    # the same parameters, stats and C1 scratch rows, bit for bit, as the launch unchecked
    start, _ = nets
    x, labels = images(3, seed=13), np.array([2, 9, 4], np.int32)
    rates_host = np.random.default_rng(14).uniform(1e-3, 1e-2, (2, L.PARAMETERS_LEN))
    table, out_table, centers = tables()

    def launch(check):
        params = device(np.stack([flat(start)] * 2))
        rates = device(rates_host.astype(np.float32))
        stats = device(np.zeros((2, 2)))
        scratch = device(np.full((2, sdlm.SCRATCH_LEN), np.nan, np.float32))
        with simcheck.checking(check) as tally:
            sdlm.sdlm_steps(params, rates, stats, scratch, device(x.reshape(1, 3, -1)),
                            device(np.zeros(2, np.int32)), device(labels),
                            device(np.array([[2, 0, 1], [1, 2, 0]], np.int32)), 0, 2,
                            device(np.array([LOSS_KINDS["mse"], LOSS_KINDS["map"]], np.int32)),
                            device(np.array([10.0, 5.0], np.float32)), centers, table,
                            out_table)
        return tally, params.copy_to_host(), stats.copy_to_host(), scratch.copy_to_host()

    tally, *checked_out = launch(True)
    assert active(tally, "kernels.sdlm.sdlm_kernel")["shared"] > 0
    _, *plain_out = launch(False)
    for got, want in zip(checked_out, plain_out, strict=True):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(checked_out[0][0], flat(start))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # racy garbage
def test_a_barrier_removed_from_the_fused_forward_is_caught(monkeypatch):
    # kernels/forward.py compiled in memory with forward_kernel's second barrier (after
    # C1+S2, before C3+S4 reads S2 and overwrites the inputs) made a `pass`, line numbers
    # kept: the check must name the race in the real kernel
    lines = open(fw.__file__).read().split("\n")
    begin = next(i for i, line in enumerate(lines) if line.startswith("def forward_kernel("))
    barriers = [i for i in range(begin, len(lines)) if "cuda.syncthreads()" in lines[i]]
    cut = barriers[1]
    lines[cut] = lines[cut].replace("cuda.syncthreads()", "pass")
    mutant = {"__name__": "forward_without_a_barrier", "__package__": fw.__package__}
    monkeypatch.setattr(common, "KERNELS", [])     # not for the compile census
    exec(compile("\n".join(lines), fw.__file__, "exec"), mutant)
    n, (table, _, centers) = 1, tables()
    msg = fault(mutant["forward_kernel"][1, fw.THREADS],
                device(np.zeros((n, L.N_CLASSES), np.float32)), device(np.zeros(n, np.int32)),
                device(images(n, seed=15).reshape(n, -1)),
                device(flat(LeNet5(seed=5).parameters())), table, centers)
    assert re.match(r"simcheck: forward_without_a_barrier\.forward_kernel: race on shared "
                    r"array buf_[ab]\[\d+\] \(forward\.py:\d+\): ", msg), msg
    assert "in one barrier interval (no cuda.syncthreads() between them)" in msg
