"""Races and out-of-bounds indices in kernels run by the CUDA simulator: a check that
needs no GPU, for faults the simulator otherwise hides.

With LENET_SIMCHECK=1 (the tests run in the simulator), every kernel launched through
kernels.common.kernel runs with its array arguments, its cuda.shared arrays and its
local arrays (cuda.local and kernels.forward_pieces.registers) behind proxies that check every
element access, and the launch fails with one SimcheckError naming the kernel, the
array, the index and the threads (block and thread indices) on the first of:

    a race          two threads touch one element, at least one of them writing, with
                    nothing ordering them: in shared memory, within one barrier
                    interval of a block (no cuda.syncthreads() between them); in global
                    memory, the same within a block, and ANY two threads of different
                    blocks within the launch (nothing orders blocks). cuda.atomic.*
                    accesses do not race with each other, only with plain ones.
    a negative index    NumPy, and Numba on the GPU, would wrap it to the end of the
                        dimension; the simulator hides it (negative slice bounds too)
    an index past the end of its dimension (of the view indexed: a slice's bounds)

Local arrays are per thread: bounds only. Elements are told apart by address, so two
arguments that are views of one buffer are one array to the race check.

How: each simulated thread counts the barriers it has passed (its interval). Per element
touched, the check keeps the last plain write and a summary of the reads and atomics
since it (a thread of the latest block and interval, another of the same, one of an
earlier block): enough to find a conflicting pair whenever the launch made one, in
whatever order the threads happened to run (the simulator runs blocks one after another,
so races between blocks are found by their accesses, not their timing). Not seen:
accesses the launch did not make (paths other inputs would take), arrays a kernel reaches
other than through its arguments, cuda.shared and cuda.local; and, rarely, a summary
update lost when two threads read one element at the same moment (a miss, never a false
alarm).

Run:
    LENET_SIMCHECK=1 pytest -q tests/test_forward.py      # any kernel test (conftest imports this)
    with simcheck.checking() as tally: ...     # from a test: on for the block, counts
    pytest -q tests/test_simcheck.py           # planted faults, then the fused kernels

A checked launch takes 2-3 times the simulator's own time. Off (the default), a launch
pays one test of kernels.common.launch_check; on a GPU nothing here runs.
"""

import linecache
import operator
import os
import re
import sys
import threading
from contextlib import contextmanager

import numpy as np

from lenet.kernels import common

active = False     # whether kernels.common's simulated launches go through launch() now
totals = {}        # kernel name -> {"launches", "shared", "global", "local"} since import
_tallies = []      # the open checking() blocks' Tally objects
_launch = None     # the _Launch now running (the simulator runs one at a time)
_fake_shape = tuple


class SimcheckError(RuntimeError):
    """A race or an out-of-bounds index found by the simulator check."""


class Tally:
    """What ran under a checking() block: kernels[name] = {"launches": ..., "shared": ...,
    "global": ..., "local": ...} (distinct shared and global elements touched, summed over
    launches, and local arrays made)."""

    def __init__(self):
        self.kernels = {}


@contextmanager
def checking(on=True):
    """Turn the check on (or off) for the block, whatever LENET_SIMCHECK says; yields a
    Tally of the kernels launched inside it."""
    was = active
    turn(on)
    tally = Tally()
    _tallies.append(tally)
    try:
        yield tally
    finally:
        turn(was)
        _tallies.remove(tally)


def turn(on):
    """Route kernels.common's simulated launches through launch() (on) or not."""
    global active
    active = bool(on)
    common.launch_check = launch if active else None


def launch(kernel, configuration, args):
    """Launch `kernel` (a kernels.common.Kernel) under the simulator with every access
    checked; SimcheckError on the first fault."""
    global _launch, _fake_shape
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray, FakeShape
    _fake_shape = FakeShape     # a shape that refuses negative indices, as the simulator's

    run = _Launch(kernel.name)
    names = kernel.py_func.__code__.co_varnames[:kernel.py_func.__code__.co_argcount]
    wrapped = [_Array(a._ary, run, run.global_shadow, False, ("argument", name, None))
               if isinstance(a, FakeCUDAArray) else a for name, a in zip(names, args, strict=True)]
    if _launch is not None:
        raise RuntimeError("simcheck: a kernel launched while another runs")
    _launch = run
    try:
        with _patched():
            kernel.dispatcher[configuration](*wrapped)
    except Exception:
        if run.fault:
            raise SimcheckError(run.fault) from None
        raise
    finally:
        _launch = None
    if run.fault:   # raised in a thread whose exception the simulator did not see
        raise SimcheckError(run.fault)
    counts = {"launches": 1, "shared": len(run.shared_shadow),
              "global": len(run.global_shadow), "local": run.local_arrays}
    for kernels in [totals] + [tally.kernels for tally in _tallies]:
        _add(kernels, kernel.name, counts)


def _add(kernels, name, counts):
    mine = kernels.setdefault(name, dict.fromkeys(counts, 0))
    for key, value in counts.items():
        mine[key] += value


# ------------------------------------------------------------------ one launch

def _who(thread):
    b, t = thread.blockIdx, thread.threadIdx
    return f"block ({b.x}, {b.y}, {b.z}) thread ({t.x}, {t.y}, {t.z})"


class _Seat:
    """One CUDA thread of one block, as the shadow entries name it (a simulator thread
    runs one block after another: tests/fast_sim.py)."""

    __slots__ = ("blockIdx", "threadIdx", "_sc_blk")

    def __init__(self, thread, blk):
        self.blockIdx, self.threadIdx, self._sc_blk = thread.blockIdx, thread.threadIdx, blk


class _Launch:
    """The shadow state of one launch: address -> entry for shared and global elements."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.shared_shadow, self.global_shadow = {}, {}
        self.blocks = {}
        self.local_arrays = 0
        self.fault = None
        self.lock = threading.Lock()

    def fail(self, message):
        with self.lock:
            if self.fault is None:
                self.fault = f"simcheck: {self.kernel}: {message}"
        raise SimcheckError(self.fault)

    def race(self, array, addr, first, first_kind, second_kind):
        me = threading.current_thread()._sc_seat
        where = "in one barrier interval (no cuda.syncthreads() between them)" \
            if first._sc_blk == me._sc_blk else \
            "in different blocks (nothing orders the blocks of a launch)"
        kind, name, site = array._root._name
        self.fail(f"race on {kind} {name}[{array.root_index(addr)}]{_at(site)}: {first_kind} "
                  f"by {_who(first)} and {second_kind} by {_who(me)} {where}")


# An entry is a list: [block, W, W_ep, R, R_ep, R2, RO, A, A_ep, A2, AO]. W: the thread of
# the last plain write and its interval. R: a thread of the latest reads (block, interval)
# and R2 another thread of the same (block, interval) if any; RO a reader of an earlier
# block (global memory only). A, A_ep, A2, AO: the same for atomics. block: the block of
# the entry (shared memory: an entry of another block is stale, every block has its own).
_R, _A = 3, 7
_A_KIND = {"read": "a read", "write": "a write", "atomic": "an atomic"}


def _conflict(e, o, me, ep, blk):
    """A thread of set o (reads or atomics) of entry e that `me` (interval ep, block blk)
    races with, else None."""
    other = e[o + 3]
    if other is not None:
        return other
    first = e[o]
    if first is None:
        return None
    if first._sc_blk != blk:
        return first
    if e[o + 1] != ep:
        return None
    return first if first is not me else e[o + 2]


def _join(e, o, me, ep, blk):
    """Add `me` to set o of entry e."""
    first = e[o]
    if first is None:
        e[o], e[o + 1] = me, ep
    elif first._sc_blk != blk:
        e[o + 3], e[o], e[o + 1], e[o + 2] = first, me, ep, None
    elif ep != e[o + 1]:
        e[o], e[o + 1], e[o + 2] = me, ep, None
    elif first is not me and e[o + 2] is None:
        e[o + 2] = me


def _touch(array, addr, kind):
    """Record access `kind` ("read", "write", "atomic") of `array`'s element at `addr`."""
    thread = threading.current_thread()
    me, ep = thread._sc_seat, thread._sc_ep
    blk = me._sc_blk
    shadow = array._shadow
    e = shadow.get(addr)
    if e is None or (array._shared and e[0] != blk):
        if kind == "write":
            shadow[addr] = [blk, me, ep, None, None, None, None, None, None, None, None]
        elif kind == "read":
            shadow[addr] = [blk, None, None, me, ep, None, None, None, None, None, None]
        else:
            shadow[addr] = [blk, None, None, None, None, None, None, me, ep, None, None]
        return
    run = array._run
    w = e[1]
    if w is not None and w is not me and (w._sc_blk != blk or e[2] == ep):
        run.race(array, addr, w, "a write", _A_KIND[kind])
    if kind == "read":
        other = _conflict(e, _A, me, ep, blk)
        if other is not None:
            run.race(array, addr, other, "an atomic", "a read")
        _join(e, _R, me, ep, blk)
        return
    other = _conflict(e, _R, me, ep, blk)
    if other is not None:
        run.race(array, addr, other, "a read", _A_KIND[kind])
    if kind == "atomic":
        _join(e, _A, me, ep, blk)
        return
    other = _conflict(e, _A, me, ep, blk)
    if other is not None:
        run.race(array, addr, other, "an atomic", "a write")
    e[0], e[1], e[2] = blk, me, ep
    e[3] = e[4] = e[5] = e[6] = e[7] = e[8] = e[9] = e[10] = None


# ------------------------------------------------------------------ the proxies

_index = operator.index


class _Array:
    """A checked view of a NumPy array standing for a device, shared or local array."""

    __slots__ = ("_a", "_run", "_shadow", "_shared", "_name", "_root", "_ptr", "_shape",
                 "_strides", "_ndim", "_n0", "_s0", "_label", "shape")

    def __init__(self, a, run, shadow, shared, name, root=None, label=None):
        self._a, self._run, self._shadow, self._shared = a, run, shadow, shared
        self._name, self._root, self._label = name, root or self, label
        self._ptr = a.__array_interface__["data"][0]
        self._shape, self._strides, self._ndim = a.shape, a.strides, a.ndim
        self._n0 = a.shape[0] if a.ndim else 0
        self._s0 = a.strides[0] if a.ndim else 0
        self.shape = _fake_shape(a.shape)

    # -- what kernels ask of an array besides its elements
    @property
    def size(self):
        return self._a.size

    @property
    def ndim(self):
        return self._ndim

    @property
    def dtype(self):
        return self._a.dtype

    def __len__(self):
        return self._n0

    def __iter__(self):
        for i in range(self._n0):
            yield self[i]

    def __repr__(self):
        return f"<simcheck {self.label()} {self._a.dtype} {self._shape}>"

    # -- elements
    def __getitem__(self, idx):
        addr = self._element(idx)
        if addr is None:
            return self._view(idx)
        if self._shadow is not None:
            _touch(self, addr, "read")
        return self._a[idx]

    def __setitem__(self, idx, value):
        addr = self._element(idx)
        if addr is None:                # a slice assigned at once: every element written
            view = self._view(idx)
            if self._shadow is not None:
                for at in np.ndindex(*view._shape):
                    _touch(view, view._address(at), "write")
        elif self._shadow is not None:
            _touch(self, addr, "write")
        self._a[idx] = value

    def atomic(self, idx):
        """Check and record an atomic access (cuda.atomic.*) at idx."""
        addr = self._element(idx)
        if addr is None:
            self._run.fail(f"atomic on {self.label()} at {idx!r}: not one element")
        if self._shadow is not None:
            _touch(self, addr, "atomic")

    def _element(self, idx):
        """The address of element idx, None if idx is not one element (a view);
        SimcheckError if an index is negative or past its dimension."""
        if self._ndim == 1:
            try:
                i = _index(idx)
            except TypeError:
                return self._address(idx)
            if i < 0 or i >= self._n0:
                self._out_of_bounds((i,), 0)
            return self._ptr + i * self._s0
        return self._address(idx)

    def _address(self, idx):
        """The address of element idx (a tuple of ndim integers), None if idx is not one
        element; SimcheckError if an index is negative or past its dimension."""
        if type(idx) is not tuple:
            idx = (idx,)
        if len(idx) != self._ndim:
            return None
        addr = self._ptr
        try:
            for k, i in enumerate(idx):
                i = _index(i)
                if i < 0 or i >= self._shape[k]:
                    self._out_of_bounds(idx, k)
                addr += i * self._strides[k]
        except TypeError:
            return None
        return addr

    def _view(self, idx):
        """A checked sub-array: integers and slices (negative bounds refused)."""
        parts = idx if type(idx) is tuple else (idx,)
        if len(parts) > self._ndim:
            self._run.fail(f"{len(parts)} indices into {self.label()} of {self._ndim} "
                           "dimensions")
        for k, p in enumerate(parts):
            if isinstance(p, slice):
                if p.step is not None and _index(p.step) <= 0:
                    self._run.fail(f"slice step {p.step} of {self.label()}: kernels here "
                                   "take forward slices only")
                for b in (p.start, p.stop):
                    if b is not None and _index(b) < 0:
                        self._out_of_bounds(parts, k, bad=b)
            else:
                try:
                    i = _index(p)
                except TypeError:
                    self._run.fail(f"index {p!r} into {self.label()}: simcheck takes "
                                   "integers and slices")
                if i < 0 or i >= self._shape[k]:
                    self._out_of_bounds(parts, k)
        return type(self)(self._a[idx], self._run, self._shadow, self._shared, self._name,
                          self._root, (self, parts))

    # -- names for messages
    def label(self):
        """How the kernel reached this array: `name` or `name[...][...]`."""
        if self._label is None:
            return self._name[1]
        parent, parts = self._label
        return f"{parent.label()}[{_show(parts)}]"

    def root_index(self, addr):
        root = self._root
        flat = (addr - root._ptr) // root._a.itemsize
        if root._a.flags.c_contiguous and 0 <= flat < root._a.size:
            return ", ".join(str(int(i)) for i in np.unravel_index(flat, root._shape))
        return f"byte {addr - root._ptr}"

    def _out_of_bounds(self, idx, k, bad=None):
        i = _index(idx[k]) if bad is None else _index(bad)
        me = threading.current_thread()
        who = _who(me) if hasattr(me, "threadIdx") else "the host"
        what = f"negative index {i}" if i < 0 else \
            f"index {i} past the end of dimension {k} (length {self._shape[k]})"
        kind, name, site = self._root._name
        shape = f"shape {self._root._shape}" + (f", {site}" if site else "")
        self._run.fail(f"{what} in {kind} {self.label()}[{_show(idx)}] ({name}: {shape}) "
                       f"by {who}")


class _Local(_Array):
    """A local array (per thread): bounds only, NumPy's own check for the end and a
    cheap one for negative indices on the way of every element; the rest as _Array."""

    __slots__ = ()

    def __getitem__(self, idx):
        try:
            if (min(idx) if type(idx) is tuple else idx) >= 0:
                v = self._a[idx]
                if type(v) is not np.ndarray:
                    return v
        except (TypeError, IndexError):
            pass
        return _Array.__getitem__(self, idx)     # a view, or the error

    def __setitem__(self, idx, value):
        try:
            if (min(idx) if type(idx) is tuple else idx) >= 0:
                self._a[idx] = value
                return
        except (TypeError, IndexError):
            pass
        _Array.__setitem__(self, idx, value)


def _show(parts):
    def one(p):
        if isinstance(p, slice):
            return ("" if p.start is None else str(int(p.start))) + ":" + \
                ("" if p.stop is None else str(int(p.stop))) + \
                ("" if p.step is None else f":{int(p.step)}")
        return str(int(p))
    return ", ".join(one(p) for p in parts)


def _at(site):
    return f" ({site})" if site else ""


def _declared(frame, kind):
    """(kind, name, "file:line") of the array made on the caller's line, e.g. `buf_a =
    cuda.shared.array(...)`, for messages."""
    path, line = frame.f_code.co_filename, frame.f_lineno
    m = re.match(r"\s*(\w+)\s*=", linecache.getline(path, line))
    return kind, m.group(1) if m else "?", f"{os.path.basename(path)}:{line}"


# ------------------------------------------------------------ the simulator's hooks

@contextmanager
def _patched():
    """The simulator's shared and local arrays, barriers, threads and atomics, checked,
    for one launch."""
    from numba.cuda.simulator import kernel as sim
    from numba.cuda.simulator import kernelapi as api

    enter, sync = sim.BlockThread.enter, sim.BlockThread.syncthreads   # tests/fast_sim.py's
    shared_array, local_array = api.FakeCUDAShared.array, api.FakeCUDALocal.array
    atomics = {name: getattr(api.FakeCUDAAtomic, name) for name in dir(api.FakeCUDAAtomic)
               if not name.startswith("__")}

    def enter_block(self, manager, block, thread):
        enter(self, manager, block, thread)
        self._sc_ep = 0
        blocks = _launch.blocks
        self._sc_seat = _Seat(self, blocks.setdefault(tuple(block), len(blocks)))

    def syncthreads(self):
        sync(self)
        self._sc_ep += 1

    def shared(self, shape, dtype, alignment=None):
        run = _launch
        if run is None:   # a thread left running by a launch that failed
            return shared_array(self, shape, dtype, alignment)
        if shape == 0:   # dynamic shared memory: one buffer, whatever the call site
            return _Array(shared_array(self, shape, dtype, alignment), run, run.shared_shadow,
                          True, ("shared array", "(dynamic)", None))
        if alignment is not None:
            raise RuntimeError("Array alignment is not supported in cudasim")
        if isinstance(dtype, api.types.Type):
            dtype = api.numpy_support.as_dtype(dtype)
        frame = sys._getframe(1)
        key = (frame.f_code.co_filename, frame.f_lineno)   # as the simulator keys them
        proxies = self.__dict__.setdefault("_simcheck", {})    # this launch's, by call site
        proxy = proxies.get(key)
        if proxy is None:
            a = self._allocations.setdefault(key, np.empty(shape, dtype))
            proxy = proxies.setdefault(
                key, _Array(a, run, run.shared_shadow, True, _declared(frame, "shared array")))
        return proxy

    def local(self, shape, dtype, alignment=None):
        run = _launch
        if run is None:
            return local_array(self, shape, dtype, alignment)
        run.local_arrays += 1
        return _Local(local_array(self, shape, dtype, alignment), run, None, False,
                      _declared(sys._getframe(1), "local array"))

    def checked_atomic(name, op):
        def atomic(self, array, *rest):
            if isinstance(array, _Array):
                array.atomic((0,) * array.ndim if name == "compare_and_swap" else rest[0])
                array = array._a
            return op(self, array, *rest)
        return atomic

    patches = [(sim.BlockThread, "enter", enter_block),
               (sim.BlockThread, "syncthreads", syncthreads),
               (api.FakeCUDAShared, "array", shared), (api.FakeCUDALocal, "array", local)]
    patches += [(api.FakeCUDAAtomic, name, checked_atomic(name, op))
                for name, op in atomics.items() if callable(op)]
    saved = [(cls, name, cls.__dict__[name]) for cls, name, _ in patches]
    for cls, name, fn in patches:
        setattr(cls, name, fn)
    try:
        yield
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)


turn(os.environ.get("LENET_SIMCHECK", "") not in ("", "0"))
