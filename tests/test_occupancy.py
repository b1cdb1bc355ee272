"""Occupancy, without a GPU: from the compile census's registers and shared memory
(tests/conftest.py ptx_census: every kernel compiled for sm_90 by ptxas), the blocks an
SM of an H100 or an H200 holds of each kernel (kernels/occupancy.py), checked against
every launch geometry the project chooses: each launch's block fits an SM, each launch
bound is kept, and the fused step's grid (lenet/workspace.py) is one wave.

    pytest -q tests/test_occupancy.py
"""

import numpy as np
import pytest
import test_long_sums
from numba import config, cuda
from test_ptx import LAUNCHES

from lenet.kernels import common
from lenet.kernels import train_step as ts
from lenet.kernels.occupancy import GPUS, HOPPER, SMLimits, resident_blocks


def figures(census):
    """kernel name -> (registers, static shared bytes), the largest over its signatures."""
    out = {}
    for e in census["kernels"]:
        regs, shared = e.get("registers"), e.get("shared_bytes", 0)
        if regs is None:
            continue
        old = out.get(e["kernel"], (0, 0))
        out[e["kernel"]] = (max(old[0], regs), max(old[1], shared))
    return out


class _Record:
    def __init__(self, kernel, launch, seen):
        self.kernel, self.launch, self.seen = kernel, launch, seen

    def __call__(self, *args):
        block = self.launch[1]
        threads = int(np.prod(block)) if isinstance(block, tuple) else int(block)
        self.seen.setdefault(self.kernel.name, set()).add(threads)


@pytest.fixture(scope="module")
def launched(monkeypatch_module):
    """kernel name -> the block sizes its launchers use (tests/test_ptx.py LAUNCHES)."""
    seen = {}
    monkeypatch_module.setattr(common.Kernel, "__getitem__",
                               lambda self, launch: _Record(self, launch, seen))
    for launch in LAUNCHES:
        launch()
    return seen


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_the_calculator_on_known_cases():
    """The CUDA occupancy calculator's answers for sm_90 (worked by hand)."""
    assert resident_blocks(32, 256, 0) == 8           # threads: 2048 / 256
    assert resident_blocks(128, 256, 0) == 2          # registers: 65536 / (128 * 256)
    assert resident_blocks(72, 256, 0) == 3           # 72 * 32 = 2304 -> 2304 a warp
    assert resident_blocks(32, 128, 48 * 1024) == 4   # shared: 233472 / (49152 + 1024)
    assert resident_blocks(32, 1024, 0) == 2
    assert resident_blocks(256, 32, 0) == 0           # past 255 registers a thread
    assert resident_blocks(32, 64, 0) == 32           # the 32-block limit
    assert resident_blocks(32, 64, 0, SMLimits(blocks=16)) == 16


def test_every_launch_fits_an_sm_and_keeps_its_launch_bound(ptx_census, launched):
    """Every kernel at the block size its launcher uses: at least one block (at least the
    launch bound's minimum) resident on an SM of every sm_90 GPU we run on."""
    regs_shared = figures(ptx_census)
    problems = []
    for kernel in common.KERNELS:
        if kernel.name not in launched:
            problems.append(f"{kernel.name}: not launched by tests/test_ptx.py LAUNCHES")
            continue
        regs, shared = regs_shared[kernel.name]
        bound = kernel.options.get("launch_bounds")
        for threads in launched[kernel.name]:
            blocks = resident_blocks(regs, threads, shared, HOPPER)
            if blocks < 1:
                problems.append(f"{kernel.name}: {threads} threads x {regs} registers, "
                                f"{shared} B shared do not fit an SM")
            if bound and (threads > bound[0] or blocks < bound[1]):
                problems.append(f"{kernel.name}: launched with {threads} threads, "
                                f"{blocks} resident; its launch bound is {bound}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("gpu", sorted(GPUS))
def test_the_fused_step_is_one_wave(ptx_census, gpu):
    """lenet/workspace.py's grid for the fused step (ts.persistent_grid) on an H100 and an
    H200: batch_kernel's blocks and dense_grads_kernel's (tile, split) blocks all resident
    at once, and the SMs full."""
    limits, sms = GPUS[gpu]
    regs_shared = figures(ptx_census)
    regs, shared = regs_shared[ts.batch_kernel.name]
    batch = resident_blocks(regs, ts.THREADS, shared, limits)
    regs, shared = regs_shared[ts.dense_grads_kernel.name]
    dense = resident_blocks(regs, ts.THREADS, shared, limits)
    blocks, splits = ts.persistent_grid(sms, batch, dense)
    assert blocks == batch * sms, "batch_kernel: one block per resident slot"
    assert splits * ts.DENSE_TILES <= dense * sms < (splits + 1) * ts.DENSE_TILES
    # tests/test_long_sums.py emulates the fused sums at this grid
    assert (test_long_sums.BATCH_RESIDENT, test_long_sums.DENSE_RESIDENT) == (batch, dense)


def test_the_workspace_asks_the_driver(monkeypatch):
    """Workspace sizes its grid by kernels.occupancy.device_resident_blocks (the driver's
    answer on a GPU), not a constant."""
    from lenet.kernels import backward_pieces, forward_pieces, occupancy
    from lenet.kernels.architecture import C3_TABLE
    from lenet.workspace import Workspace
    answers = {ts.batch_kernel.name: 5, ts.dense_grads_kernel.name: 19}
    monkeypatch.setattr(occupancy, "device_resident_blocks",
                        lambda kernel, threads, simulated=2: answers[kernel.name])
    table = C3_TABLE
    ws = Workspace(8, cuda.to_device(np.zeros(840, np.float32)), forward_pieces.c3_table(table),
                   backward_pieces.c3_out_table(table))
    sms = 1 if config.ENABLE_CUDASIM else cuda.get_current_device().MULTIPROCESSOR_COUNT
    assert (ws.blocks, ws.splits) == ts.persistent_grid(sms, 5, 19)


def test_a_batch_past_the_32_bit_rows_is_refused():
    """The fused step's rows are indexed in 32 bits: the largest batch's last float is
    below 2^32, the next batch's would not be, and the Workspace refuses it before
    allocating (its rows would take 17 GB)."""
    from lenet.kernels import backward_pieces, forward_pieces
    from lenet.kernels.architecture import C3_TABLE
    from lenet.workspace import Workspace
    assert ts.padded(ts.MAX_BATCH) * ts.ROW_LEN <= 2**32
    assert ts.padded(ts.MAX_BATCH + 1) * ts.ROW_LEN > 2**32
    table = C3_TABLE
    with pytest.raises(ValueError, match="past the fused step's largest"):
        Workspace(ts.MAX_BATCH + 1, cuda.to_device(np.zeros(840, np.float32)),
                  forward_pieces.c3_table(table), backward_pieces.c3_out_table(table))
