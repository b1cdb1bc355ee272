"""Numba's CUDA simulator made faster for the tests, with its semantics unchanged.
install() is called by tests/conftest.py under the simulator, and by
tests/sim_site/sitecustomize.py in the tests' child Pythons.

- Blocks: the simulator runs a block as one Python thread per CUDA thread, and its
  BlockManager releases a cuda.syncthreads() by polling every thread from the main
  thread in a busy loop, which takes the GIL from the threads doing the work. Here a
  block's threads meet at a barrier of their own (a condition variable: the last live
  thread to arrive releases the others; a thread that returns stops counting), and the
  main thread only joins them. A barrier opens when every live thread of the block has
  reached it, and the first exception of a block ends the launch (the other threads are
  aborted at their next barrier). tests/simcheck.py wraps the syncthreads installed here.
- Casts: a kernel's uint32(x) or float32(x) is numba.types' __call__, which imports a
  module and checks an abstract class on every call before it makes the NumPy scalar;
  here a number makes its NumPy scalar at once (the same one).
- Indexing: an array inside a kernel is a FakeWithinKernelCUDAArray around a
  FakeCUDAArray around the NumPy array, and each element read went through both; here it
  reads the NumPy array, wrapping views and records as before.
- One CPU: a block's threads run on one CPU (they inherit the launching thread's
  affinity, restored after the block). They hold the GIL in turns anyway, and handing it
  between cores cost more than the work: the GPU model's tests ran 1.4x (quiet) to 2x
  (other core busy) slower when the threads could move.
- No forced GIL switches: while a block runs, a thread keeps the GIL until it waits at a
  barrier or returns (the switch interval, restored after the block, is 1 s). With
  Python's 5 ms, each of up to 511 threads waiting for the GIL woke every 5 ms to ask for
  it, and the system's time for those wake-ups was most of a 512-thread launch's."""

import contextlib
import os
import sys
import threading

import numpy as np


class _Barrier:
    def __init__(self, parties):
        self.cond = threading.Condition()
        self.live = parties        # threads still running
        self.arrived = 0           # threads waiting at the current barrier
        self.generation = 0
        self.failed = None         # the block's first thread to fail

    def _open(self):
        self.arrived = 0
        self.generation += 1
        self.cond.notify_all()

    def wait(self):
        with self.cond:
            if self.failed:
                raise RuntimeError("abort flag set on syncthreads call")
            generation = self.generation
            self.arrived += 1
            if self.arrived == self.live:
                self._open()
            while self.generation == generation and not self.failed:
                self.cond.wait()
            if self.failed and self.generation == generation:
                raise RuntimeError("abort flag set on syncthreads clear")

    def leave(self, failed=None):
        with self.cond:
            self.live -= 1
            if failed is not None and self.failed is None:
                self.failed = failed
                self.cond.notify_all()
            elif self.arrived and self.arrived == self.live:
                self._open()


def install():
    from numba.cuda.simulator import kernel as sim

    def run(self, grid_point, *args):
        with _one_cpu(), _no_forced_switches():
            _run(self, grid_point, *args)

    def _run(self, grid_point, *args):
        barrier = self._barrier = _Barrier(int(np.prod(self._block_dim)))
        threads = []

        def target():
            try:
                self._f(*args)
            except BaseException:
                barrier.leave(threading.current_thread())
                raise
            barrier.leave()

        for block_point in np.ndindex(*self._block_dim):
            t = sim.BlockThread(target, self, grid_point, block_point, self._debug)
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        if barrier.failed:   # its exception, as BlockThread.run recorded it (thread indices)
            error, traceback = barrier.failed.exception
            raise error.with_traceback(traceback)

    def syncthreads(self):
        self._manager._barrier.wait()

    sim.BlockManager.run = run
    sim.BlockThread.syncthreads = syncthreads
    _fast_casts()
    _fast_indexing()


@contextlib.contextmanager
def _one_cpu():
    """Pin the calling thread, and the threads it starts, to one of its CPUs (Linux):
    pytest-xdist's worker k to the k-th, so that two workers' blocks do not share one."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    allowed = sorted(os.sched_getaffinity(0))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
    os.sched_setaffinity(0, {allowed[worker % len(allowed)]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


_switches = {"depth": 0, "before": None, "lock": threading.Lock()}


@contextlib.contextmanager
def _no_forced_switches(interval=1.0):
    """sys's switch interval at `interval` while any block runs (blocks launched from
    several threads at once restore it once, after the last)."""
    with _switches["lock"]:
        if _switches["depth"] == 0:
            _switches["before"] = sys.getswitchinterval()
            sys.setswitchinterval(interval)
        _switches["depth"] += 1
    try:
        yield
    finally:
        with _switches["lock"]:
            _switches["depth"] -= 1
            if _switches["depth"] == 0:
                sys.setswitchinterval(_switches["before"])


def _fast_casts():
    from numba.core import types

    generic = types.Type.__call__
    casts = {}   # a type's name -> its NumPy scalar type, as cast_python_value finds it

    def call(self, *args):
        if len(args) == 1 and isinstance(args[0], (int, float, np.generic)) and \
                type(self) in (types.Integer, types.Float):
            cast = casts.get(self.name)
            if cast is None:
                cast = casts[self.name] = getattr(np, self.name)
            return cast(args[0])
        return generic(self, *args)

    types.Integer.__call__ = call
    types.Float.__call__ = call


def _fast_indexing():
    from numba.cuda.simulator.cudadrv import devicearray as sim

    def getitem(self, idx):
        item = self._item
        value = item._ary[idx]
        if type(value) is np.ndarray or type(value) is np.void:
            return sim.FakeWithinKernelCUDAArray(sim.FakeCUDAArray(value, stream=item.stream))
        return value

    def setitem(self, idx, value):
        self._item._ary[idx] = value

    sim.FakeWithinKernelCUDAArray.__getitem__ = getitem
    sim.FakeWithinKernelCUDAArray.__setitem__ = setitem
