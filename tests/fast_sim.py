"""Numba's CUDA simulator made faster for the tests, with its semantics unchanged.
install() is called by tests/conftest.py under the simulator, and by
tests/sim_site/sitecustomize.py in the tests' child Pythons.

- Blocks: the simulator runs a block as one Python thread per CUDA thread, and its
  BlockManager releases a cuda.syncthreads() by polling every thread from the main
  thread in a busy loop, which takes the GIL from the threads doing the work. Here a
  block's threads meet at a barrier of their own (a condition variable: the last live
  thread to arrive releases the others; a thread that returns stops counting), and the
  launching thread waits until the last has left. A barrier opens when every live thread
  of the block has reached it, and the first exception of a block ends the launch (the
  other threads are aborted at their next barrier). tests/simcheck.py wraps the
  syncthreads and the BlockThread.enter installed here.
- Threads kept: starting a thread hands the GIL to it and back, and the simulator started
  one per CUDA thread of every block. Blocks launched from the main thread run on
  threads kept for the next block (another thread's launch starts its block's threads
  and ends them after it); enter() gives a kept thread its block and thread indices.
- Casts: a kernel's uint32(x) or float32(x) is numba.types' __call__, which imports a
  module and checks an abstract class on every call before it makes the NumPy scalar;
  here a number makes its NumPy scalar at once (the same one; a scalar of that type is
  itself, and a Python int's is made once).
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
        self.done = threading.Lock()   # released when the last thread leaves
        self.done.acquire()

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
            if self.live == 0:
                self.done.release()


def install():
    from numba.cuda.simulator import kernel as sim

    class KeptThread(sim.BlockThread):
        """A simulated CUDA thread that runs one block after another: releasing `go`
        starts it on the block that enter() and `block` gave it."""

        def __init__(self):
            threading.Thread.__init__(self, daemon=True)
            self.go = threading.Lock()
            self.go.acquire()
            self.block = None    # (the kernel's function, its arguments, the barrier)

        def run(self):
            while True:
                self.go.acquire()
                if self.block is None:
                    return
                f, args, barrier = self.block
                self._target, self._args, self._kwargs = f, args, {}
                try:   # BlockThread.run records an Exception as the simulator does
                    if self.debug:   # as BlockThread's debug_wrapper
                        with np.errstate(divide="raise"):
                            sim.BlockThread.run(self)
                    else:
                        sim.BlockThread.run(self)
                except BaseException as e:
                    self.exception = (e, e.__traceback__)
                barrier.leave(self if self.exception else None)

    kept = []    # the main thread's, for its next blocks

    def enter(self, manager, grid_point, block_point):
        """Indices and state of this thread for one block, as BlockThread.__init__ sets
        them."""
        self._manager, self.debug = manager, manager._debug
        self.blockIdx, self.threadIdx = sim.Dim3(*grid_point), sim.Dim3(*block_point)
        block = manager._block_dim
        self.thread_id = self.threadIdx.x + block[0] * (self.threadIdx.y + block[1] *
                                                        self.threadIdx.z)
        self.exception, self.abort = None, False

    def run(self, grid_point, *args):
        with _one_cpu(), _no_forced_switches():
            _run(self, grid_point, *args)

    def _run(self, grid_point, *args):
        points = list(np.ndindex(*self._block_dim))
        barrier = self._barrier = _Barrier(len(points))
        main = threading.current_thread() is threading.main_thread()
        threads = kept if main else []
        while len(threads) < len(points):
            threads.append(KeptThread())
            threads[-1].start()
        threads = threads[:len(points)]    # the block's (a smaller block leaves some idle)
        for t, point in zip(threads, points, strict=True):
            t.enter(self, grid_point, point)
            t.block = (self._f, args, barrier)
        for t in threads:
            t.go.release()
        barrier.done.acquire()
        if not main:   # this launch's threads end (daemons, they would wait forever)
            for t in threads:
                t.block = None
                t.go.release()
                t.join()
        if barrier.failed:   # its exception, as BlockThread.run recorded it (thread indices)
            error, traceback = barrier.failed.exception
            raise error.with_traceback(traceback)

    def syncthreads(self):
        self._manager._barrier.wait()

    sim.BlockManager.run = run
    sim.BlockThread.enter = enter
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
    # a number type's name -> (its NumPy scalar type, as cast_python_value finds it, and
    # the scalars made of Python ints: a kernel casts the same few indices and constants)
    casts = {t.name: (getattr(np, t.name), {})
             for t in (*types.integer_domain, *types.real_domain)}

    def call(self, *args):
        entry = casts.get(self.name)
        if entry is not None and len(args) == 1:
            x, (cast, made) = args[0], entry
            kind = type(x)
            if kind is cast:   # a NumPy scalar is immutable: the same one
                return x
            if kind is int:
                scalar = made.get(x)
                if scalar is None:
                    scalar = made[x] = cast(x)
                return scalar
            if kind is float or isinstance(x, np.generic):
                return cast(x)
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
