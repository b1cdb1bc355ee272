"""Tests of kernels/conv.py: every version against the float64 CPU reference.

Each kernel version runs on the C1, C3 and C5 shapes of LeNet-5 at the batch sizes of
conftest.BATCHES, with seeded random inputs (weights three times the paper's
initial range, C3's exactly zero off the table) and outputs poisoned with NaN, and is
compared with kernels/reference.py (float64, on the same float32 inputs) under the one
float32 tolerance of kernels/tolerance.py. The simulator and a GPU run the same cases,
at the batch sizes conftest.BATCHES gives each.

    pytest -q tests/test_conv_kernels.py
"""

import functools

import numpy as np
import pytest
from conftest import BATCHES, SIMULATOR
from numba import cuda  # imported after conftest has chosen the simulator or the GPU

from kernels import conv
from kernels import reference as ref
from kernels.architecture import C3_TABLE, CONV_TABLES
from kernels.tolerance import assert_close

K = 5
SHAPES = {"C1": (1, 32), "C3": (6, 14), "C5": (16, 5)}  # input maps, input map size
VERSIONS = (1, 2)
# Under the simulator C5 runs at batch 1 only: its 48,120 weights make each batch-3 case
# take 13-16 s there, and the GPU model sends C5 to kernels/full.py (tested on its own).
CASES = [(layer, n, version) for layer in SHAPES for n in BATCHES for version in VERSIONS
         if not (SIMULATOR and layer == "C5" and n > 1)]


def _case_id(case):
    layer, n, version = case
    return f"{layer}-n{n}-v{version}"


# ------------------------------------------------------------------ data

@functools.cache
def _inputs(layer, n):
    """Seeded float32 inputs of `layer` for n images: x, weight, bias, dout, hout, out.
    `out` is the reference forward output rounded to float32, as the backward takes it."""
    table = CONV_TABLES[layer]
    c, size = SHAPES[layer]
    m = table.shape[1]
    rng = np.random.default_rng([n, c, m])
    bound = 3 * 2.4 / (table.sum(axis=0) * K * K)  # three times the paper's [-2.4/F, 2.4/F]
    x = rng.uniform(-1.2, 1.2, (n, c, size, size)).astype(np.float32)
    weight = (rng.uniform(-1, 1, (m, c, K, K)) * bound[:, None, None, None]).astype(np.float32)
    weight[~table.T] = 0.0  # exact zeros where the table has no connection
    bias = (rng.uniform(-1, 1, m) * bound).astype(np.float32)
    out = _forward_ref(layer, n, x, weight, bias).astype(np.float32)
    dout = rng.uniform(-1, 1, out.shape).astype(np.float32)
    hout = rng.uniform(0, 1, out.shape).astype(np.float32)  # curvatures are >= 0
    return x, weight, bias, dout, hout, out


def _forward_ref(layer, n, x, weight, bias):
    f64 = np.float64
    return ref.squash_ref(ref.conv_ref(x.astype(f64), weight.astype(f64), bias.astype(f64),
                                       CONV_TABLES[layer]))


@functools.cache
def _backward_ref(layer, n, second):
    """Reference (dx, dweight, dbias), or (hx, hweight, hbias) when `second`, in float64,
    in slices of 256 images to bound the memory of the reference's window copies."""
    x, weight, bias, dout, hout, out = (a.astype(np.float64) for a in _inputs(layer, n))
    squash_bw, conv_bw = ((ref.squash_backward2_ref, ref.conv_backward2_ref) if second
                          else (ref.squash_backward_ref, ref.conv_backward_ref))
    grad = hout if second else dout
    dx, dweight, dbias = [], 0.0, 0.0
    for start in range(0, n, 256):
        part = slice(start, start + 256)
        px, pw, pb = conv_bw(squash_bw(grad[part], out[part]), x[part], weight,
                             CONV_TABLES[layer])
        dx.append(px)
        dweight, dbias = dweight + pw, dbias + pb
    return np.concatenate(dx), dweight, dbias


def _poisoned(shape):
    """A device array full of NaN: an element the kernel does not write fails the check."""
    return cuda.to_device(np.full(shape, np.nan, dtype=np.float32))


# ----------------------------------------------------------------- table

def test_conv_table_lists_c3():
    t = conv.conv_table(C3_TABLE)
    assert (t.c_in, t.n_maps, t.max_in, t.max_out) == (6, 16, 6, 10)
    # Paper's Table I: maps 0-5 take 3 inputs, 6-14 take 4, 15 takes all 6; 60 in all.
    assert t.in_counts_host.tolist() == [3] * 6 + [4] * 9 + [6]
    assert t.in_counts_host.sum() == 60
    assert t.out_counts_host.tolist() == [10] * 6  # each S2 map feeds 10 C3 maps
    for m in range(16):
        connected = np.flatnonzero(C3_TABLE[:, m]).tolist()
        assert t.in_maps_host[m, :t.in_counts_host[m]].tolist() == connected
        assert (t.in_maps_host[m, t.in_counts_host[m]:] == -1).all()
    assert t.in_maps_host[0, :3].tolist() == [0, 1, 2]
    assert t.in_maps_host[12, :4].tolist() == [0, 1, 3, 4]  # a non-contiguous one
    for c in range(6):
        assert t.out_maps_host[c].tolist() == np.flatnonzero(C3_TABLE[c]).tolist()
    # slot[c, m] is the position of c in m's list, -1 off the table.
    assert ((t.slot_host >= 0) == C3_TABLE).all()
    for m in range(16):
        for j in range(t.in_counts_host[m]):
            assert t.slot_host[t.in_maps_host[m, j], m] == j
    # The device copies hold the same lists.
    for name in ("in_maps", "in_counts", "out_maps", "out_counts", "slot"):
        np.testing.assert_array_equal(getattr(t, name).copy_to_host(),
                                      getattr(t, name + "_host"))


def test_conv_table_full():
    t = conv.conv_table(CONV_TABLES["C5"])
    assert (t.max_in, t.max_out) == (16, 120)
    assert (t.in_maps_host == np.arange(16)).all() and (t.in_counts_host == 16).all()
    assert (t.out_maps_host == np.arange(120)).all() and (t.out_counts_host == 120).all()


@pytest.mark.parametrize("table, match", [
    (np.ones((2, 3), dtype=np.int32), "bool"),
    (np.ones(3, dtype=bool), "2-D"),
    (np.array([[True, False]]), "at least one input"),
])
def test_conv_table_rejects(table, match):
    with pytest.raises(ValueError, match=match):
        conv.conv_table(table)


# ----------------------------------------------------- against the reference

@pytest.mark.parametrize("layer, n, version", CASES, ids=map(_case_id, CASES))
def test_conv_forward(layer, n, version):
    x, weight, bias, _, _, out32 = _inputs(layer, n)
    out = _poisoned(out32.shape)
    conv.conv_forward(out, cuda.to_device(x), cuda.to_device(weight), cuda.to_device(bias),
                      conv.conv_table(CONV_TABLES[layer]), version=version)
    assert_close(out.copy_to_host(), _forward_ref(layer, n, x, weight, bias), what="out")


@pytest.mark.parametrize("second", [False, True], ids=["backward", "backward2"])
@pytest.mark.parametrize("layer, n, version", CASES, ids=map(_case_id, CASES))
def test_conv_backward(layer, n, version, second):
    """conv_backward (dx, dweight, dbias) and conv_backward2 (hx, hweight, hbias)."""
    x, weight, _, dout, hout, out = _inputs(layer, n)
    table = CONV_TABLES[layer]
    # The backend asks no dx of C1: its n=1 case (every C1 case under the simulator,
    # to save time) runs with dx=None, which must skip the dx kernel.
    want_dx = not (layer == "C1" and (n == 1 or SIMULATOR))
    dx = _poisoned(x.shape) if want_dx else None
    dweight, dbias = _poisoned(weight.shape), _poisoned(weight.shape[:1])
    launch = conv.conv_backward2 if second else conv.conv_backward
    launch(dx, dweight, dbias, cuda.to_device(hout if second else dout), cuda.to_device(out),
           cuda.to_device(x), cuda.to_device(weight), conv.conv_table(table), version=version)

    ref_dx, ref_dweight, ref_dbias = _backward_ref(layer, n, second)
    h = "h" if second else "d"
    if want_dx:
        assert_close(dx.copy_to_host(), ref_dx, what=h + "x")
    got = dweight.copy_to_host()
    assert_close(got, ref_dweight, what=h + "weight")
    assert_close(dbias.copy_to_host(), ref_dbias, what=h + "bias")
    # Off the table the gradient is written, and exactly 0 (C3's 36 missing pairs).
    assert (got[~table.T] == 0).all()


@pytest.mark.parametrize("layer", ["C1", "C3"])
def test_v2_uneven_blocks(layer, monkeypatch):
    """The v2 kernels with blockings that small batches do not reach: forward and dx
    blocks of as many images as shared memory holds (3 and 2 of C3's), weight blocks of
    5 maps (the last group short) over chunks of 2 images (the last one short), walked
    one image at a time (several pieces per block, then the kernel that adds up the
    chunks)."""
    n = 3
    monkeypatch.setattr(conv, "MIN_BLOCKS", 1)
    monkeypatch.setattr(conv, "_weights_v2_plan", lambda n, c, m, h, w, max_in: (5, 2, 1))
    x, weight, bias, dout, _, out = _inputs(layer, n)
    table = conv.conv_table(CONV_TABLES[layer])
    got = _poisoned(out.shape)
    conv.conv_forward(got, cuda.to_device(x), cuda.to_device(weight), cuda.to_device(bias),
                      table, version=2)
    assert_close(got.copy_to_host(), _forward_ref(layer, n, x, weight, bias), what="out")
    dx, dweight, dbias = _poisoned(x.shape), _poisoned(weight.shape), _poisoned(bias.shape)
    conv.conv_backward(dx, dweight, dbias, cuda.to_device(dout), cuda.to_device(out),
                       cuda.to_device(x), cuda.to_device(weight), table, version=2)
    for name, got, want in zip(("dx", "dweight", "dbias"), (dx, dweight, dbias),
                               _backward_ref(layer, n, False), strict=True):
        assert_close(got.copy_to_host(), want, what=name)


# ------------------------------------------------------- sparse table, errors

@pytest.mark.parametrize("version", VERSIONS)
def test_off_table_weights_are_never_read(version):
    """NaN in C3's off-table weights changes nothing: those pairs are neither read nor
    multiplied (a NaN weight times anything is NaN)."""
    x, weight, bias, dout, _, out = _inputs("C3", 1)
    garbage = weight.copy()
    garbage[~C3_TABLE.T] = np.nan
    table = conv.conv_table(C3_TABLE)
    got = _poisoned(out.shape)
    conv.conv_forward(got, cuda.to_device(x), cuda.to_device(garbage), cuda.to_device(bias),
                      table, version=version)
    assert_close(got.copy_to_host(), _forward_ref("C3", 1, x, weight, bias), what="out")
    dx, dweight, dbias = _poisoned(x.shape), _poisoned(weight.shape), _poisoned((16,))
    conv.conv_backward(dx, dweight, dbias, cuda.to_device(dout), cuda.to_device(out),
                       cuda.to_device(x), cuda.to_device(garbage), table, version=version)
    assert_close(dx.copy_to_host(), _backward_ref("C3", 1, False)[0], what="dx")


def _c3_arrays():
    x, weight, bias, dout, _, out = (cuda.to_device(a) for a in _inputs("C3", 1))
    return dict(out=out, x=x, weight=weight, bias=bias, dout=dout,
                dx=cuda.device_array((1, 6, 14, 14), np.float32),
                dweight=cuda.device_array((16, 6, K, K), np.float32),
                dbias=cuda.device_array(16, np.float32))


def _bad(name, make):
    """A change of one launcher argument, made when the test runs."""
    def change(args):
        args[name] = make()
    return change


def _dev(shape, dtype=np.float32):
    return cuda.device_array(shape, dtype)


BAD_FORWARD = [
    ("x float64", _bad("x", lambda: _dev((1, 6, 14, 14), np.float64)), "x must be float32"),
    ("x on host", _bad("x", lambda: np.zeros((1, 6, 14, 14), np.float32)), "device array"),
    ("x 3-D", _bad("x", lambda: _dev((6, 14, 14))), "4-D"),
    ("x maps", _bad("x", lambda: _dev((1, 5, 14, 14))), "5 input maps"),
    ("x too small", _bad("x", lambda: _dev((1, 6, 4, 14))), "at least 5x5"),
    ("weight 3x3", _bad("weight", lambda: _dev((16, 6, 3, 3))), "weight has shape"),
    ("bias shape", _bad("bias", lambda: _dev(15)), "bias has shape"),
    ("out shape", _bad("out", lambda: _dev((1, 16, 10, 11))), "out has shape"),
    ("out int32", _bad("out", lambda: _dev((1, 16, 10, 10), np.int32)), "out must be float32"),
    ("out strided", _bad("out", lambda: _dev((1, 16, 10, 12))[:, :, :, :10]), "C-contiguous"),
    ("table on host", _bad("table", lambda: C3_TABLE), "ConvTable"),
    ("version", _bad("version", lambda: 3), "unknown version"),
]


@pytest.mark.parametrize("change, match", [b[1:] for b in BAD_FORWARD],
                         ids=[b[0] for b in BAD_FORWARD])
def test_conv_forward_rejects(change, match):
    a = _c3_arrays()
    args = dict(out=a["out"], x=a["x"], weight=a["weight"], bias=a["bias"],
                table=conv.conv_table(C3_TABLE), version=2)
    change(args)
    with pytest.raises(ValueError, match=match):
        conv.conv_forward(**args)


BAD_BACKWARD = [
    ("dx shape", _bad("dx", lambda: _dev((1, 6, 14, 13))), "dx has shape"),
    ("dweight shape", _bad("dweight", lambda: _dev((16, 5, K, K))), "dweight has shape"),
    ("dbias float64", _bad("dbias", lambda: _dev(16, np.float64)), "dbias must be float32"),
    ("dout shape", _bad("dout", lambda: _dev((1, 16, 10, 9))), "dout has shape"),
    ("out shape", _bad("out", lambda: _dev((2, 16, 10, 10))), "out has shape"),
    ("x float64", _bad("x", lambda: _dev((1, 6, 14, 14), np.float64)), "x must be float32"),
    ("table C5", _bad("table", lambda: conv.conv_table(CONV_TABLES["C5"])), "input maps"),
    ("version", _bad("version", lambda: 0), "unknown version"),
]


@pytest.mark.parametrize("second", [False, True], ids=["backward", "backward2"])
@pytest.mark.parametrize("change, match", [b[1:] for b in BAD_BACKWARD],
                         ids=[b[0] for b in BAD_BACKWARD])
def test_conv_backward_rejects(change, match, second):
    a = _c3_arrays()
    args = dict(dx=a["dx"], dweight=a["dweight"], dbias=a["dbias"], dout=a["dout"],
                out=a["out"], x=a["x"], weight=a["weight"], table=conv.conv_table(C3_TABLE),
                version=2)
    change(args)
    if second:  # same checks, named after the second derivatives
        match = match.replace("dx", "hx").replace("dweight", "hweight").replace(
            "dbias", "hbias").replace("dout", "hout")
        args = {"h" + k[1:] if k in ("dx", "dweight", "dbias", "dout") else k: v
                for k, v in args.items()}
    with pytest.raises(ValueError, match=match):
        (conv.conv_backward2 if second else conv.conv_backward)(**args)
