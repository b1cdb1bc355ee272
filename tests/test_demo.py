"""`lenet demo` (lenet/demo/): its answers against `lenet predict` and the project's model,
its HTTP refusals (and silence when clients hang up), the confinement of its static
files, many clients at once, the CLI (another data set's test images), and the page itself
in a real browser (Playwright driving Debian's Chromium), from 1440 px wide to a phone's
320, drawn on with a mouse and a finger.

The reference for a drawing is independent of the demo's request path: the drawing is
written as a PNG file and read back by `lenet predict --json` (lenet/images.py from the
file, the fused forward), and its activations are those of LeNet5.forward_all on the
digit lenet.images.mnist_digit makes of that file. The checkpoint: one pass of the
paper's recipe (--recipe lecun) over the first 10,000 MNIST training digits, made once.
Browser tests need Chromium at /usr/bin/chromium and the playwright package; they are
skipped with a reason where either is missing, and fail in CI (.ci/run installs both).
"""

import base64
import contextlib
import http.client
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import missing
from PIL import Image

from lenet.cli import main
from lenet.data import Split, load_mnist, preprocess
from lenet.datasets import FASHION_MNIST, MNIST
from lenet.demo import server
from lenet.demo.compute import LAYERS, Demo, distortion
from lenet.demo.server import MAX_BODY, DemoServer, static_files
from lenet.images import mnist_digit
from lenet.kernels import reference as ref
from lenet.kernels.architecture import RBF_CENTERS
from lenet.kernels.distort import distort_ref
from lenet.kernels.tolerance import assert_close
from lenet.model import LeNet5
from lenet.train import train

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHAPES = {"input": (1, 32, 32), "C1": (6, 28, 28), "S2": (6, 14, 14), "C3": (16, 10, 10),
          "S4": (16, 5, 5), "C5": (120,), "F6": (84,)}
SQUASH = 1.7159
PENALTY_ATOL = 1e-3   # printed penalties are O(10-100); float32 paths differ by ~1e-5


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, mnist_dir):
    """A usable checkpoint: the paper's recipe, one pass over 10,000 digits (~30 s)."""
    images, labels = load_mnist("train", mnist_dir)
    test_images, test_labels = load_mnist("test", mnist_dir)
    model = LeNet5(device="cpu", seed=0, init="lush")
    path = tmp_path_factory.mktemp("demo") / "demo.npz"
    train(model, (preprocess(images[:10000]), labels[:10000].astype(np.int64)),
          (preprocess(test_images[:500]), test_labels[:500].astype(np.int64)),
          recipe="lecun", epochs=1, checkpoint=path, log=path.with_suffix(".log.jsonl"),
          progress=False, evaluate_train=False, out=lambda *a, **k: None)
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    return LeNet5.load(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def test_set(mnist_dir):
    return load_mnist("test", mnist_dir)


@pytest.fixture(scope="module")
def demo_server(model, test_set):
    """A running demo server on a free port, its test-set mistakes being found."""
    demo = Demo(model, lambda: Split(test_set[0], test_set[1], MNIST, "mnist"))
    httpd = DemoServer(demo, "127.0.0.1", 0)
    threads = [threading.Thread(target=httpd.serve_forever, daemon=True),
               threading.Thread(target=demo.find_mistakes, daemon=True)]
    for t in threads:
        t.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def ready(demo_server):
    """The server once its mistakes are found (the test set's forward, ~2-40 s)."""
    deadline = time.monotonic() + 300
    while demo_server.demo.state == "computing" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert demo_server.demo.state == "ready", demo_server.demo.reason
    return demo_server


# ----------------------------------------------------------------- helpers

def request(httpd, method, path, body=None, headers=None):
    """(status, headers, body bytes) of one request on a fresh connection."""
    host, port = httpd.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def raw(httpd, data):
    """The raw reply to raw request bytes (for what http.client would not send)."""
    with socket.create_connection(httpd.server_address[:2], timeout=30) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def draw_body(grey, step=None):
    grey = np.asarray(grey, np.uint8)
    body = {"width": grey.shape[1], "height": grey.shape[0],
            "pixels": base64.b64encode(grey.tobytes()).decode()}
    if step is not None:
        body["step"] = step
    return json.dumps(body).encode()


def decode(answer):
    """name -> float32 array of an answer's layers."""
    return {name: np.frombuffer(base64.b64decode(layer["data"]), "<f4").reshape(layer["shape"])
            for name, layer in answer["layers"].items()}


def drawings(test_set, count=6, seed=11):
    """Grey drawings (H,W) uint8 of MNIST test digits, as people draw them: scaled up
    (keeping the aspect ratio) onto pads of awkward sizes at random places, black on
    white (as the page's pad) or white on black. Returns [(grey, test index)]."""
    rng = np.random.default_rng(seed)
    made = []
    for index in rng.choice(len(test_set[1]), count, replace=False):
        side = int(rng.integers(57, 261))
        digit = Image.fromarray(test_set[0][index]).resize((side, side),
                                                           Image.Resampling.BILINEAR)
        extra_h, extra_w = (int(v) for v in rng.integers(0, 61, 2))
        grey = np.zeros((side + extra_h, side + extra_w), np.uint8)
        top, left = int(rng.integers(0, extra_h + 1)), int(rng.integers(0, extra_w + 1))
        grey[top:top + side, left:left + side] = np.asarray(digit)
        made.append((grey if len(made) % 3 == 2 else 255 - grey, int(index)))
    return made


def predict_file(tmp_path, checkpoint, grey, name="drawing.png"):
    """What `lenet predict --json` says of `grey` saved as a PNG file, and the path."""
    path = tmp_path / name
    Image.fromarray(np.asarray(grey, np.uint8)).save(path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["predict", "--json", "--device", "cpu", "--checkpoint", str(checkpoint),
                     str(path)]) == 0
    return json.loads(out.getvalue())[0], path


def reference_layers(model, path, params=None):
    """forward_all of the digit mnist_digit makes of the file, distorted by the float64
    definition (kernels.distort.distort_ref) when params are given."""
    x = preprocess(mnist_digit(path))
    if params is not None:
        x = distort_ref(params[None], x).astype(np.float32)
    acts = model.forward_all(model.prepare_images(x))
    return dict(zip(LAYERS + ("penalties",), (a[0] for a in acts), strict=True))


def one_line_error(status, headers, body):
    """The refusal's reason, after checking its form: one line of JSON, no traceback."""
    assert headers["Content-Type"] == "application/json"
    text = body.decode()
    assert text.endswith("\n") and "\n" not in text[:-1], text
    assert "Traceback" not in text
    reply = json.loads(text)
    assert set(reply) == {"error"} and reply["error"], reply
    return reply["error"]


# ----------------------------------------------------------------- answers

def test_drawing_is_prepared_as_predict_prepares_a_file(demo_server, model, checkpoint,
                                                        test_set, tmp_path):
    """For drawings of awkward sizes, in either polarity: the demo's input is exactly
    lenet predict's (from a PNG of the same pixels), every layer is forward_all of it,
    and the penalties and the class are lenet predict's."""
    for grey, index in drawings(test_set):
        status, _, body = request(demo_server, "POST", "/api/draw", draw_body(grey))
        assert status == 200, body
        answer = json.loads(body)
        predicted, path = predict_file(tmp_path, checkpoint, grey)
        layers = decode(answer)
        expected = reference_layers(model, path)
        assert {k: v.shape for k, v in layers.items()} == SHAPES
        np.testing.assert_array_equal(layers["input"], expected["input"])
        for name in LAYERS[1:]:
            assert_close(layers[name], expected[name], what=f"{name} of test digit {index}")
        np.testing.assert_allclose(answer["penalties"], predicted["penalties"], rtol=1e-5,
                                   atol=PENALTY_ATOL)
        assert (answer["answer"], answer["name"]) == (predicted["class"], predicted["name"])
        assert answer["step"] == 0 and answer["distortion"] is None


def test_upscaled_digits_are_mostly_read_right(demo_server, test_set):
    """A sanity check of the whole chain: MNIST digits drawn large are read as their
    labels about as often as the checkpoint reads the test set (7.5% error after one
    pass over 10,000 digits)."""
    made = drawings(test_set, count=40, seed=5)
    right = sum(json.loads(request(demo_server, "POST", "/api/draw", draw_body(g))[2])
                ["answer"] == test_set[1][i] for g, i in made)
    assert right >= 32, f"{right} of 40 read right"


def test_distortion_steps_are_the_papers(demo_server, model, checkpoint, test_set, tmp_path):
    """Step s: the input is the prepared drawing under distortion s, as kernels.distort's
    float64 definition computes it, and its description is the drawn translation,
    scale, squeeze and shear (drawn again here from the same seed)."""
    grey, _ = drawings(test_set, count=1, seed=3)[0]
    _, path = predict_file(tmp_path, checkpoint, grey)
    for step in (1, 2, 977):
        status, _, body = request(demo_server, "POST", "/api/draw", draw_body(grey, step))
        assert status == 200, body
        answer = json.loads(body)
        params, _ = distortion(step)
        expected = reference_layers(model, path, params)
        layers = decode(answer)
        assert_close(layers["input"], expected["input"], what=f"distorted input {step}")
        np.testing.assert_allclose(answer["penalties"], expected["penalties"], rtol=1e-4,
                                   atol=PENALTY_ATOL)
        rng = np.random.default_rng(step)  # kernels.distort.draw_distortions' order
        tx, ty = rng.uniform(-2, 2, 2)
        scale, squeeze, shear = (rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1),
                                 rng.uniform(-0.2, 0.2))
        shown = answer["distortion"]
        np.testing.assert_allclose([shown[k] for k in ("shift_x", "shift_y", "scale",
                                                       "squeeze", "shear")],
                                   [tx, ty, scale, squeeze, shear], rtol=1e-5, atol=1e-5)
        assert answer["step"] == step
    assert not np.array_equal(distortion(1)[0], distortion(2)[0])


def test_mistakes_are_those_of_show_errors(ready, model, test_set):
    """The mistakes view holds every test digit the model gets wrong, surest first
    (margin between the two smallest penalties), as lenet show errors orders them:
    checked against kernels/reference.py's float64 forward, an independent one."""
    params, x = model.parameters(), preprocess(test_set[0])
    y = np.concatenate([ref.forward_ref(params, x[i:i + 1000])["penalties"]
                        for i in range(0, len(x), 1000)])
    labels = test_set[1].astype(np.int64)
    two = np.sort(y, axis=1)[:, :2]
    margin = two[:, 1] - two[:, 0]
    wrong = set(np.flatnonzero(y.argmin(axis=1) != labels).tolist())
    info = json.loads(request(ready, "GET", "/api/info")[2])
    demo = ready.demo
    found = set(demo.mistakes.tolist())
    ties = {i for i in wrong ^ found if margin[i] < 1e-3}  # float32 paths may split a tie
    assert wrong ^ found == ties
    assert info["mistake_count"] == len(found) and 0 < len(found) < 2000
    assert info["test_count"] == 10000 and info["mistakes"] == "ready"
    shown = []
    for k in (0, 1, 2, len(found) // 2, len(found) - 1):
        status, _, body = request(ready, "GET", f"/api/mistake?k={k}")
        assert status == 200, body
        answer = json.loads(body)
        m = answer["mistake"]
        i = m["index"]
        assert m["k"] == k and m["label"] == labels[i] and m["label_name"] == str(labels[i])
        assert m["predicted"] != labels[i] and m["count"] == len(found)
        assert abs(m["margin"] - margin[i]) < PENALTY_ATOL
        np.testing.assert_array_equal(decode(answer)["input"][0],
                                      preprocess(test_set[0][i])[0, 0])
        assert answer["answer"] == m["predicted"] or margin[i] < 1e-3
        shown.append(m["margin"])
    assert shown == sorted(shown, reverse=True)
    assert shown[0] == pytest.approx(max(margin[i] for i in found), abs=PENALTY_ATOL)


# ----------------------------------------------------------- bad requests

def test_refusals_are_4xx_with_one_line(ready, test_set):
    """Too large, malformed, wrong shape, blank, unknown: each a 4xx with one line."""
    good = np.full((40, 30), 255, np.uint8)
    good[5:35, 12:18] = 0
    pixels = base64.b64encode(good.tobytes()).decode()

    def body(**fields):
        return json.dumps({"width": 30, "height": 40, "pixels": pixels, **fields}).encode()

    cases = [  # (method, path, body, status, words in the reason)
        ("POST", "/api/draw", b"{not json", 400, "malformed JSON"),
        ("POST", "/api/draw", b"[1, 2]", 400, "JSON object"),
        ("POST", "/api/draw", b'{"width": 30}', 400, "missing height, pixels"),
        ("POST", "/api/draw", body(width="30"), 400, "width must be an integer"),
        ("POST", "/api/draw", body(height=True), 400, "height must be an integer"),
        ("POST", "/api/draw", body(pixels="@@not base64@@"), 400, "not valid base64"),
        ("POST", "/api/draw", body(pixels=[1, 2, 3]), 400, "base64 string"),
        ("POST", "/api/draw", body(width=31), 422, "wrong shape: 1200 grey pixels sent "
         "for 31x40 = 1240"),
        ("POST", "/api/draw", body(width=4, height=300), 422, "width must lie in 8..1024"),
        ("POST", "/api/draw", body(width=2000), 422, "width must lie in 8..1024"),
        ("POST", "/api/draw", body(step=-1), 422, "step must lie in 0..10000"),
        ("POST", "/api/draw", body(step=1.5), 400, "step must be an integer"),
        ("POST", "/api/draw", draw_body(np.full((20, 20), 255)), 422, "blank"),
        ("POST", "/api/draw", draw_body(np.full((20, 20), 7)), 422, "the drawing is all one "
         "colour: draw a digit on the pad"),
        ("POST", "/api/draw", draw_body(np.full((280, 280), 0)), 422, "all one colour"),
        ("POST", "/api/draw", b"[" * 2000 + b"]" * 2000, 400, "malformed JSON: nested too "
         "deeply"),
        ("POST", "/api/draw", b'{"a": ' * 5000 + b"1" + b"}" * 5000, 400, "malformed JSON"),
        ("POST", "/api/draw", body().replace(b'"width": 30', b'"width": ' + b"9" * 5000), 422,
         "width must lie in 8..1024, not 999999999999... (5,000 digits)"),
        ("POST", "/api/draw", body(step=0).replace(b'"step": 0', b'"step": -' + b"9" * 300),
         422,
         "step must lie in 0..10000, not -99999999999... (300 digits)"),
        ("POST", "/api/draw", body(height=10 ** 19), 422,
         f"height must lie in 8..1024, not {10 ** 19}"),
        ("POST", "/api/draw", body(width="9" * 5000), 400, "width must be an integer, not "
         "'99999999999999999999999... (5,002 characters)"),
        ("POST", "/api/draw", b"\xff\xfe\x00", 400, "malformed JSON"),
        ("GET", "/api/mistake", None, 400, "k is missing: give an integer in 0.."),
        ("GET", "/api/mistake?k=", None, 400, "k must be an integer, not ''"),
        ("GET", "/api/mistake?k=1_0", None, 400, "k must be an integer, not '1_0'"),
        ("GET", "/api/mistake?k=" + "9" * 5000, None, 422, "(5,000 digits)"),
        ("GET", "/api/mistake?k=abc", None, 400, "k must be an integer"),
        ("GET", "/api/mistake?k=-1", None, 422, "k must lie in 0.."),
        ("GET", "/api/mistake?k=100000", None, 422, "k must lie in 0.."),
        ("GET", "/api/mistake?k=0&step=x", None, 400, "step must be an integer"),
        ("GET", "/api/nothing", None, 404, "no such API"),
        ("POST", "/api/info", b"{}", 405, "POST is not served on /api/info: it takes GET "
         "and HEAD"),
        ("POST", "/api/mistake?k=0", b"{}", 405, "POST is not served on /api/mistake"),
        ("POST", "/", b"{}", 405, "POST is not served on /: it takes GET and HEAD"),
        ("POST", "/demo.js", None, 405, "POST is not served on /demo.js"),
        ("POST", "/api/nothing", b"{}", 404, "not found: /api/nothing"),
        ("POST", "/nothing.html", b"{}", 404, "not found: /nothing.html"),
        ("GET", "/api/draw", None, 405, "GET is not served on /api/draw: it takes POST"),
        ("PUT", "/api/draw", body(), 405, "PUT is not served on /api/draw: it takes POST"),
        ("DELETE", "/", None, 405, "DELETE is not served on /: it takes GET and HEAD"),
        ("OPTIONS", "/api/info", None, 405, "OPTIONS is not served on /api/info"),
        ("POST", "/api/draw", b"x" * (MAX_BODY + 1), 413, "request too large"),
        ("GET", "/" + "a" * 60000, None, 404, "not found: /aaaaaaaa"),
        ("GET", "/" + "b" * 100, None, 404, "bbbb... (101 characters)"),
        ("GET", "/api/" + "a" * 60000, None, 404, "no such API: /api/aaaa"),
    ]
    k_range = f"k must lie in 0..{len(ready.demo.mistakes) - 1}, not "
    cases += [("GET", "/api/mistake?k=" + "9" * 5000, None, 422, k_range + "999999999999"),
              ("GET", "/api/mistake?k=-1", None, 422, k_range + "-1")]
    allow = {"/api/draw": {"POST"}, "/api/info": {"GET", "HEAD"}, "/": {"GET", "HEAD"},
             "/demo.js": {"GET", "HEAD"}, "/api/mistake": {"GET", "HEAD"}}
    for method, path, data, status, words in cases:
        got, headers, reply = request(ready, method, path, data)
        assert got == status, (method, path, data[:60] if data else None, reply)
        assert words in one_line_error(got, headers, reply), (words, reply)
        assert len(reply) < 200, reply[:300]    # one short line, whatever was sent
        if status == 405:   # HTTP requires the methods the path takes (RFC 9110 15.5.6)
            methods = {m.strip() for m in headers["Allow"].split(",")}
            assert methods == allow[path.split("?")[0]], (path, headers["Allow"])
        else:
            assert headers["Allow"] is None, (path, headers["Allow"])
    assert request(ready, "POST", "/api/draw", body())[0] == 200  # the good one itself


def test_refusals_of_the_protocol(ready):
    """What http.client would not send: no length, a huge length never sent, chunked,
    a request line that is not HTTP; each refused in one line, connection closed."""
    cases = [
        (b"POST /api/draw HTTP/1.1\r\nHost: x\r\n\r\n", b"411", "Content-Length is required"),
        (b"POST /api/draw HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n", b"413",
         "request too large: 1,000,000,000 bytes"),
        (b"POST /api/draw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         b"411", "not chunked"),
        (b"POST /api/draw HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n", b"400",
         "is not a number"),
        (b"POST /api/draw HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{}", b"400",
         "ended after 2 of 50 bytes"),
        (b"HELLO\r\n\r\n", b"400", "Bad request"),
        (b"GET /" + b"a" * 60000 + b" HTTP/1.1 x\r\n\r\n", b"400", "Bad request"),
        # RFC 9112: a Content-Length is digits alone (int() would take "1_0" and "+2")
        (b"POST /api/draw HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n{}", b"400",
         "Content-Length '1_0' is not a number"),
        (b"POST /api/draw HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}", b"400",
         "Content-Length '+2' is not a number"),
        (b"POST /api/draw HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 60000 +
         b"\r\n\r\n", b"413", "request too large: a number of 60,000 digits"),
    ]
    for data, status, words in cases:
        reply = raw(ready, data)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == status, reply
        text = body.decode()
        assert "\n" not in text.rstrip("\n") and "Traceback" not in text, text
        assert words in json.loads(text)["error"] and len(body) < 200, text[:300]
    # two lengths that differ: which body is the request? 400, and the connection closed
    # (not read as the first length's body and then a next request; RFC 9112 6.3)
    for lengths in ((b"2", b"5"), (b"5", b"2"), (b"2", b"2, 5")):
        reply = raw(ready, b"POST /api/draw HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                    lengths[0] + b"\r\nContent-Length: " + lengths[1] + b"\r\n\r\n{}"
                    b"GET /api/info HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"400" and b"\r\nConnection: close" in head, reply
        assert reply.count(b"HTTP/1.1 ") == 1, reply  # the GET after it is not answered
        assert "2 different Content-Length headers" in json.loads(body)["error"], body
    # a body on a GET or HEAD is not read, so the connection closes after the answer:
    # the body is never read as a next request (nor is what follows it)
    after = b"GET /api/info HTTP/1.1\r\nHost: x\r\n\r\n"
    for head in (b"GET /api/info", b"HEAD /", b"GET /demo.css"):
        for framing, body in ((b"Content-Length: %d" % len(after), after),
                              (b"Transfer-Encoding: chunked", b"%x\r\n" % len(after) + after +
                               b"\r\n0\r\n\r\n")):
            reply = raw(ready, head + b" HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n" +
                        body + after)
            assert reply.startswith(b"HTTP/1.1 200 ") and reply.count(b"HTTP/1.1 ") == 1, \
                (head, framing, reply[:300])
            assert b"\r\nConnection: close" in reply.partition(b"\r\n\r\n")[0], reply[:300]
    # the same length twice is one length (RFC 9110 8.6 allows it): the body is read
    reply = raw(ready, b"POST /api/draw HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
    assert b"missing width, height, pixels" in reply, reply
    reply = raw(ready, b"POST /api/draw HTTP/1.1\r\nHost: x\r\nContent-Length: 2 \r\n"
                b"Connection: close\r\n\r\n{}")   # a space after the length: allowed
    assert b"missing width, height, pixels" in reply, reply


def test_a_fault_of_ours_is_one_line_to_the_client_and_its_trace_here(ready, capfd,
                                                                     monkeypatch):
    """A request that fails inside the server: a 500 with one line of JSON, the
    connection closed, and the traceback on the server's terminal; then it serves on."""
    def broken():
        raise RuntimeError("a bug of ours")
    monkeypatch.setattr(ready.demo, "info", broken)
    capfd.readouterr()
    status, headers, body = request(ready, "GET", "/api/info")
    assert status == 500 and headers["Connection"] == "close"
    assert json.loads(body) == {"error": "internal error in the demo server (its log has "
                                         "the details)"}
    monkeypatch.undo()
    assert request(ready, "GET", "/api/info")[0] == 200
    out, err = capfd.readouterr()
    assert out == "" and "Traceback" in err and err.rstrip().endswith(
        "RuntimeError: a bug of ours"), err[-3000:]


def test_clients_that_hang_up_leave_no_trace(ready, capfd):
    """Clients that close the connection mid-request (a body promised and not sent, a
    large one cut short, one too large to read) or reset it between requests: the
    server only drops the connection, printing nothing on its terminal (no
    BrokenPipeError or ConnectionResetError traceback), and serves on."""
    head = b"POST /api/draw HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    cases = [head % 100 + b"{}", head % 3_000_000 + b"{}",
             head % 3_000_000 + b"x" * 1_000_000, head % 20_000_000 + b"x" * 1_000_000,
             b"GET /api/info HTTP/1.1\r\nHost: x\r\n\r\n"]
    capfd.readouterr()
    before = set(threading.enumerate())
    for _ in range(4):
        for data in cases:
            with socket.create_connection(ready.server_address[:2], timeout=30) as s:
                with contextlib.suppress(ConnectionError):
                    s.sendall(data)
        # one that reads its reply, then resets the connection (SO_LINGER 0) while the
        # server waits for its next request on it
        with socket.create_connection(ready.server_address[:2], timeout=30) as s:
            s.sendall(cases[-1])
            assert s.recv(12) == b"HTTP/1.1 200"
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    for t in set(threading.enumerate()) - before:   # the threads that served them end
        if t.name.endswith("(process_request_thread)"):
            t.join(timeout=60)
            assert not t.is_alive(), "a connection's thread still runs after 60 s"
    status, _, body = request(ready, "GET", "/api/info")
    assert status == 200 and json.loads(body)["mistakes"] == "ready"
    out, err = capfd.readouterr()
    assert (out, err) == ("", ""), err[-3000:]


# ------------------------------------------------------------ static files

def test_page_files_are_served(demo_server):
    """/ is the page; its script and style come with their types, byte for byte."""
    folder = os.path.join(os.path.dirname(server.__file__), "static")
    for path, name, kind in (("/", "index.html", "text/html"), ("/demo.js", "demo.js",
                             "text/javascript"), ("/demo.css", "demo.css", "text/css")):
        status, headers, body = request(demo_server, "GET", path)
        assert status == 200 and headers["Content-Type"].startswith(kind)
        with open(os.path.join(folder, name), "rb") as f:
            assert body == f.read()
    page = request(demo_server, "GET", "/")[2].decode()
    for element in ('id="pad"', 'id="clear"', 'id="answer"', 'id="penalties"', 'id="maps"'):
        assert element in page


def test_head_gives_get_s_headers_without_the_body(demo_server):
    with open(os.path.join(os.path.dirname(server.__file__), "static", "index.html"),
              "rb") as f:
        size = len(f.read())
    status, headers, body = request(demo_server, "HEAD", "/")
    assert (status, headers["Content-Length"], body) == (200, str(size), b"")
    status, headers, body = request(demo_server, "HEAD", "/api/nothing")
    assert status == 404 and int(headers["Content-Length"]) > 0 and body == b""


def test_static_files_stay_in_their_folder(demo_server, tmp_path):
    """No path reaches a file outside the page's folder: the server's own source one
    folder up, the system's files, encoded and doubled dots, and a symlink out."""
    secrets_ = {"server.py": open(server.__file__, "rb").read()[:200],
                "passwd": b"root:"}
    for path in ("/../server.py", "/%2e%2e/server.py", "/..%2fserver.py", "/static/../server.py",
                 "/./../server.py", "//etc/passwd", "/../../../../../../etc/passwd",
                 "/%2F..%2F..%2Fetc%2Fpasswd", "/....//server.py", "/demo.js/../../server.py",
                 "/__init__.py", "/compute.py", "/static", "/static/demo.js", "/%00demo.js",
                 "/C:\\windows\\win.ini", "/demo.js%00.html"):
        reply = raw(demo_server, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert reply.split(b" ")[1] == b"404", (path, reply[:200])
        assert not any(s in reply for s in secrets_.values()), path
    folder = tmp_path / "static"
    folder.mkdir()
    (folder / "page.html").write_text("<p>hi</p>")
    (folder / "notes.txt").write_text("not a page type")
    (folder / "leak.js").symlink_to(server.__file__)
    (folder / "dir.js").mkdir()
    assert static_files(folder) == {"page.html": ("text/html; charset=utf-8", b"<p>hi</p>")}


# ------------------------------------------------------------ many clients

def test_many_clients_at_once(ready, test_set):
    """32 clients at once, each on its own kept-alive connection, drawing and asking
    for mistakes: every reply is the one a lone client gets for the same request."""
    made = drawings(test_set, count=8, seed=23)
    alone = [json.loads(request(ready, "POST", "/api/draw", draw_body(g))[2]) for g, _ in made]
    mistake = json.loads(request(ready, "GET", "/api/mistake?k=3&step=2")[2])
    failures, barrier = [], threading.Barrier(32)

    def client(c):
        conn = http.client.HTTPConnection(*ready.server_address[:2], timeout=120)
        try:
            barrier.wait()
            for r in range(6):
                j = (c + r) % len(made)
                if (c + r) % 4 == 3:
                    conn.request("GET", "/api/mistake?k=3&step=2")
                    want = mistake
                else:
                    conn.request("POST", "/api/draw", draw_body(made[j][0]))
                    want = alone[j]
                reply = conn.getresponse()
                got = json.loads(reply.read())
                if reply.status != 200 or got["answer"] != want["answer"] or not np.allclose(
                        got["penalties"], want["penalties"], rtol=1e-6) or any(
                        got["layers"][n]["data"] != want["layers"][n]["data"]
                        for n in ("input",)):
                    failures.append((c, r, reply.status))
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            failures.append((c, repr(e)))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert failures == []


# --------------------------------------------------------------------- CLI

def test_cli_refuses_bad_options(checkpoint, capsys, tmp_path):
    """A file that is not a checkpoint, a port out of range, a port taken: one line."""
    (tmp_path / "x.npz").write_text("no")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, words in ((["--checkpoint", str(tmp_path / "x.npz")], "not a .npz"),
                            (["--checkpoint", str(checkpoint), "--port", "70000"],
                             "--port must lie in 0..65535"),
                            (["--checkpoint", str(checkpoint), "--port", str(port)],
                             f"cannot listen on 127.0.0.1 port {port}")):
            assert main(["demo", "--device", "cpu", *args]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and words in err, err


def test_cli_serves_the_page(checkpoint, mnist_dir):
    """`python -m lenet demo` prints its address, serves the page, finds the mistakes
    of the data set given, and stops on SIGINT."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lenet", "demo", "--checkpoint", str(checkpoint), "--port",
         "0", "--device", "cpu", "--data", mnist_dir], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        line = process.stdout.readline()
        assert line.startswith("LeNet-5 demo (cpu): http://127.0.0.1:"), line
        url = line.split()[3]
        host, port = url.split("/")[2].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("GET", "/")
        assert b'id="pad"' in conn.getresponse().read()
        info = mistakes_found(conn)
        assert info["mistakes"] == "ready" and info["test_title"] == "MNIST", info
        conn.close()
    finally:
        process.send_signal(2)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and "Traceback" not in err, err


def mistakes_found(conn):
    """/api/info once the server has finished finding the test set's mistakes (5 min at
    most)."""
    deadline = time.monotonic() + 300
    while True:
        conn.request("GET", "/api/info")
        info = json.loads(conn.getresponse().read())
        if info["mistakes"] != "computing" or time.monotonic() > deadline:
            return info
        time.sleep(0.5)


@pytest.fixture(scope="module")
def fashion_checkpoint(checkpoint, tmp_path_factory):
    """The test checkpoint's weights saved as a Fashion-MNIST checkpoint (its data set and
    class names): what the demo shows depends on those, not on the weights."""
    model = LeNet5.load(checkpoint, device="cpu")
    model.dataset, model.classes = FASHION_MNIST.name, FASHION_MNIST.classes
    path = tmp_path_factory.mktemp("fashion") / "fashion.npz"
    model.save(path)
    return path


def test_cli_other_data_set_is_noted_and_labelled_by_its_own_classes(fashion_checkpoint,
                                                                     mnist_dir, test_set):
    """A Fashion-MNIST checkpoint shown MNIST's test set (--dataset mnist): the demo prints
    the note `lenet eval` prints, and a mistake's label is named by MNIST's classes
    (digits), not the checkpoint's ("labelled Shirt" of a 6); the answer keeps the
    checkpoint's classes, and the page gets the note and the checkpoint's noun."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lenet", "demo", "--checkpoint", str(fashion_checkpoint),
         "--port", "0", "--device", "cpu", "--dataset", "mnist", "--data", mnist_dir],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        host, port = process.stdout.readline().split()[3].split("/")[2].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        info = mistakes_found(conn)
        assert info["mistakes"] == "ready" and info["test_title"] == "MNIST", info
        assert info["noun"] == "item" and info["classes"] == list(FASHION_MNIST.classes)
        assert info["test_note"] == ("the model was trained on fashion-mnist; these are "
                                     "MNIST's images, labelled with MNIST's classes")
        for k in (0, 1, info["mistake_count"] - 1):
            conn.request("GET", f"/api/mistake?k={k}")
            answer = json.loads(conn.getresponse().read())
            m = answer["mistake"]
            label = int(test_set[1][m["index"]])
            assert (m["label"], m["label_name"]) == (label, str(label)), m
            assert answer["name"] == FASHION_MNIST.classes[answer["answer"]]
        conn.close()
    finally:
        process.send_signal(2)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and "Traceback" not in err, err
    assert f"note: {fashion_checkpoint} was trained on fashion-mnist; these are MNIST's " \
        "images\n" in err, err


def test_cli_without_test_set_still_draws(model, tmp_path):
    """Without a test set the drawing works and the mistakes say why there are none."""
    def no_test_set():
        raise OSError("no such directory: /x")

    demo = Demo(model, no_test_set)
    demo.find_mistakes()
    assert demo.state == "unavailable" and demo.reason == "no such directory: /x"
    grey = np.full((50, 50), 255.0)
    grey[10:40, 22:28] = 0
    assert demo.drawing(grey)["name"] in model.classes


# ----------------------------------------------------------------- browser

@pytest.fixture(scope="module")
def browser():
    """Chromium through Playwright; a skip with the reason where it is missing (a failure
    in CI, whose .ci/run installs it)."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install playwright)"
    if reason is None and not os.path.exists(CHROMIUM):
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if reason:
        missing(reason)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, ready):
    page = browser.new_page(viewport={"width": 1440, "height": 800})
    problems = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(ready.url)
    page.wait_for_function("window.fetch && document.querySelectorAll('#maps canvas')"
                           ".length === 48")
    yield page
    page.close()
    assert problems == []


def on_pad(page, points):
    """Points of the 280x280 pad as the page's coordinates (the pad may be drawn smaller)."""
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / 280
    return [(box["x"] + x * scale, box["y"] + y * scale) for x, y in points]


def stroke(page, points):
    points = on_pad(page, points)
    page.mouse.move(*points[0])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x, y, steps=6)
    page.mouse.up()


def touch_stroke(page, points):
    """A stroke with a finger: touch events through the DevTools protocol, as a phone's
    screen sends them (Playwright's own touchscreen only taps)."""
    points = on_pad(page, points)
    cdp = page.context.new_cdp_session(page)

    def touch(kind, at):
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [
            {"x": x, "y": y} for x, y in at]})

    touch("touchStart", points[:1])
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        for t in np.linspace(0, 1, 7)[1:]:
            touch("touchMove", [(x0 + t * (x1 - x0), y0 + t * (y1 - y0))])
    touch("touchEnd", [])
    cdp.detach()


def settled(page):
    """Wait until the maps show the pad's latest drawing."""
    page.wait_for_function("document.querySelector('#maps').dataset.version === "
                           "document.querySelector('#pad').dataset.version && "
                           "document.body.dataset.busy === '0'", timeout=60000)


def pad_grey(page):
    """The pad's pixels as the grey levels of a PNG of it (PIL's ITU-R 601 luma)."""
    url = page.evaluate("document.querySelector('#pad').toDataURL('image/png')")
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    return np.asarray(image.convert("RGBA").convert("L"))


CANVASES_JS = """() => [...document.querySelectorAll('#maps canvas')].map(c => ({
  layer: c.dataset.layer, map: Number(c.dataset.map), width: c.width, height: c.height,
  rgba: Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)}))"""


def greys(values, lo=-SQUASH, hi=SQUASH):
    """The grey levels the page should paint: lo white, hi black."""
    return np.clip(np.round(255 * (hi - np.asarray(values, np.float64)) / (hi - lo)), 0, 255)


def check_maps(page, expected, winner):
    """Every canvas of #maps painted with its map's values (within 1 grey level)."""
    canvases = page.evaluate(CANVASES_JS)
    want = {"input": greys(expected["input"][0], -0.1, 1.175)[None]}
    want.update({name: greys(expected[name]) for name in ("C1", "S2", "C3", "S4")})
    want.update({"C5": greys(expected["C5"]).reshape(1, 20, 6),
                 "F6": greys(expected["F6"]).reshape(1, 12, 7),
                 "bitmap": greys(RBF_CENTERS[winner]).reshape(1, 12, 7)})
    assert sorted((c["layer"], c["map"]) for c in canvases) == sorted(
        (name, k) for name, maps in want.items() for k in range(len(maps)))
    for c in canvases:
        rgba = np.asarray(c["rgba"], np.float64).reshape(c["height"], c["width"], 4)
        assert (rgba[..., 3] == 255).all(), f"{c['layer']} {c['map']} not drawn"
        assert np.abs(rgba[..., 0] - want[c["layer"]][c["map"]]).max() <= 1, \
            f"{c['layer']} map {c['map']} is not its values"


def test_browser_drawing_gets_answer_and_every_map(page, model, checkpoint, tmp_path):
    """Strokes drawn with the mouse: the answer is lenet predict's of a PNG of the pad,
    every map shows that drawing's activations, the penalties are predict's; a "1"
    is read as 1; Clear empties everything."""
    for strokes, expect in (([[(140, 40), (142, 240)]], "1"),
                            ([[(70, 60), (200, 60), (120, 235)], [(105, 150), (175, 150)]],
                             None),
                            ([[(200, 70), (90, 70), (85, 140), (180, 150), (190, 220),
                               (80, 230)]], None)):
        page.click("#clear")
        for points in strokes:
            stroke(page, points)
        settled(page)
        predicted, path = predict_file(tmp_path, checkpoint, pad_grey(page))
        assert page.inner_text("#answer") == predicted["name"]
        if expect is not None:
            assert predicted["name"] == expect
        rows = page.eval_on_selector_all("#penalties .bar-row", "rows => rows.map(r => "
                                         "[r.dataset.class, r.dataset.penalty, r.className])")
        assert [int(r[0]) for r in rows] == list(range(10))
        np.testing.assert_allclose([float(r[1]) for r in rows], predicted["penalties"],
                                   rtol=1e-5, atol=PENALTY_ATOL)
        assert [k for k, r in enumerate(rows) if "winner" in r[2]] == [predicted["class"]]
        check_maps(page, reference_layers(model, path), predicted["class"])
    page.click("#clear")
    assert page.inner_text("#answer") == ""
    assert page.eval_on_selector_all("#penalties .bar-row", "rows => rows.length") == 0
    canvases = page.evaluate(CANVASES_JS)
    assert all(not any(c["rgba"][3::4]) for c in canvases)
    assert (pad_grey(page) == 255).all()


def test_browser_steps_through_mistakes_and_distortions(page, ready, model, test_set):
    """The second view shows mistake 1 (the surest), then a distortion of it, then
    mistake 2, each with every map, as the API gives them."""
    demo = ready.demo
    page.click("#view-errors")
    for action, k, step in ((None, 0, 0), ("#next-step", 0, 1), ("#next-step", 0, 2),
                            ("#next-mistake", 1, 0), ("#prev-mistake", 0, 0)):
        if action:
            page.click(action)
        page.wait_for_function(f"document.querySelector('#maps').dataset.version === "
                               f"'errors-mistakes-{k}-{step}'", timeout=60000)
        index = int(demo.mistakes[k])
        assert page.inner_text("#mistake-count") == f"mistake {k + 1} of {len(demo.mistakes)}"
        assert f"test image #{index}: labelled {test_set[1][index]}" in \
            page.inner_text("#mistake-caption")
        x = preprocess(test_set[0][index])
        if step:
            x = distort_ref(distortion(step)[0][None], x).astype(np.float32)
            assert page.inner_text("#step-count") == f"distortion {step}"
            assert "shift" in page.inner_text("#step-caption")
        acts = model.forward_all(model.prepare_images(x))
        expected = dict(zip(LAYERS, (a[0] for a in acts[:-1]), strict=True))
        winner = int(acts[-1][0].argmin())
        assert page.inner_text("#answer") == model.classes[winner]
        check_maps(page, expected, winner)
    # the keys: down a distortion, right a mistake; beside the user's drawing the
    # mistakes' keys do nothing (they once moved the hidden mistake and undid the step)
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.querySelector('#maps').dataset.version === "
                           "'errors-mistakes-1-0'", timeout=60000)
    page.check('input[value="drawing"]')
    page.evaluate("() => document.activeElement.blur()")   # keys to the page, not the radio
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowLeft")
    assert page.evaluate("() => [errors.source, errors.k, errors.step]") == ["drawing", 1, 1]
    page.check('input[value="mistakes"]')
    page.click("#view-draw")
    assert page.inner_text("#answer") == ""


LAYOUT_JS = """() => {
  const box = (e) => { const r = e.getBoundingClientRect(); return {
    name: e.id || `${e.tagName.toLowerCase()} ${e.dataset.layer || ""}`,
    left: r.left + scrollX, top: r.top + scrollY, right: r.right + scrollX,
    bottom: r.bottom + scrollY}; };
  return {documentWidth: document.documentElement.scrollWidth, innerWidth: innerWidth,
    panels: [...document.querySelectorAll("header, #left, #maps, #output")].map(box),
    layers: [...document.querySelectorAll("#maps figure")].map(box),
    pieces: [...document.querySelectorAll("header > *, #left > :not([hidden]), " +
                                         "#output > *, #pad, #penalties > * > *")].map(box)};
}"""


def overlap(a, b):
    """Whether two boxes share more than a pixel's edge."""
    return (min(a["right"], b["right"]) - max(a["left"], b["left"]) > 0.5 and
            min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > 0.5)


def check_layout(layout, width):
    """Nothing wider than the screen, no panel over another, every layer's maps inside
    the maps' panel and clear of each other."""
    assert layout["innerWidth"] == width, layout["innerWidth"]   # no zooming out
    assert layout["documentWidth"] <= width, layout["documentWidth"]
    boxes = layout["panels"] + layout["layers"] + layout["pieces"]
    assert all(b["left"] >= 0 and b["right"] <= width + 0.5 for b in boxes), \
        [b for b in boxes if b["left"] < 0 or b["right"] > width + 0.5]
    for group in (layout["panels"], layout["layers"]):
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                assert not overlap(a, b), (width, a, b)
    maps = next(b for b in layout["panels"] if b["name"] == "maps")
    for b in layout["layers"]:
        assert (maps["left"] - 0.5 <= b["left"] and b["right"] <= maps["right"] + 0.5 and
                maps["top"] - 0.5 <= b["top"] and b["bottom"] <= maps["bottom"] + 0.5), (b, maps)


@pytest.mark.parametrize("width", [1440, 1180, 1100, 800, 760, 390, 320])
def test_browser_layout_fits_every_width(browser, ready, checkpoint, tmp_path, width):
    """From a wide screen to a phone's: the page never scrolls sideways nor zooms out
    (a phone's browser with the page's viewport tag), no panel (pad, maps, penalties,
    header) lies on another, each layer's maps stay in their panel; and a "1" drawn (by
    finger on a phone, where the pad must not scroll the page) is read as lenet predict
    reads a PNG of the pad, with its penalties; the mistakes' view fits as well."""
    phone = width < 500
    context = browser.new_context(viewport={"width": width, "height": 800},
                                  is_mobile=phone, has_touch=phone)
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        page.goto(ready.url)
        page.wait_for_function("document.querySelectorAll('#maps canvas').length === 48")
        check_layout(page.evaluate(LAYOUT_JS), width)
        if phone:
            assert page.evaluate("document.documentElement.scrollHeight") > 800
            page.evaluate("window.scrollTo(0, 40)")
            page.wait_for_function("window.scrollY === 40")
            touch_stroke(page, [(140, 40), (142, 240)])
            assert page.evaluate("window.scrollY") == 40    # the finger drew, not scrolled
        else:
            stroke(page, [(140, 40), (142, 240)])
        settled(page)
        predicted, _ = predict_file(tmp_path, checkpoint, pad_grey(page))
        assert predicted["name"] == "1" and page.inner_text("#answer") == "1"
        rows = page.eval_on_selector_all("#penalties .bar-row", "rows => rows.map(r => "
                                         "Number(r.dataset.penalty))")
        np.testing.assert_allclose(rows, predicted["penalties"], rtol=1e-5,
                                   atol=PENALTY_ATOL)
        check_layout(page.evaluate(LAYOUT_JS), width)   # with the answer and penalties
        page.click("#view-errors")                        # the mistakes' view
        page.wait_for_function("document.querySelector('#maps').dataset.version === "
                               "'errors-mistakes-0-0'", timeout=60000)
        check_layout(page.evaluate(LAYOUT_JS), width)
        page.set_viewport_size({"width": width, "height": 600})  # a resize refits
        check_layout(page.evaluate(LAYOUT_JS), width)
    finally:
        context.close()
    assert problems == []


def test_browser_words_follow_the_data_set(browser, ready, fashion_checkpoint, test_set):
    """A Fashion-MNIST checkpoint's page asks for an item, never a digit (tab, hint, the
    pad's label, the mistakes view's "my drawing"), names MNIST's test images by their
    digits with a note, and refuses a pad filled with ink as all one colour; an MNIST
    checkpoint's page asks for a digit."""
    demo = Demo(LeNet5.load(fashion_checkpoint, device="cpu"),
                lambda: Split(test_set[0], test_set[1], MNIST, "mnist"))
    httpd = DemoServer(demo, "127.0.0.1", 0)
    for work in (httpd.serve_forever, demo.find_mistakes):
        threading.Thread(target=work, daemon=True).start()
    page = browser.new_page(viewport={"width": 1440, "height": 800})
    try:
        for url, noun in ((httpd.url, "item"), (ready.url, "digit")):
            page.goto(url)
            page.wait_for_function("document.querySelector('#about').textContent"
                                   ".includes('trained on')")
            another = "an item" if noun == "item" else "a digit"
            assert page.inner_text("#view-draw") == f"Draw {another}"
            assert page.inner_text("#hint") == f"draw one {noun} with the mouse, a pen or a " \
                "finger"
            assert page.get_attribute("#pad", "aria-label") == f"drawing pad: draw one {noun}"
            page.click("#view-errors")                    # the surest mistake first
            page.wait_for_function("document.querySelector('#maps').dataset.version === "
                                   "'errors-mistakes-0-0'", timeout=60000)
            page.check('input[value="drawing"]')          # its maps give way to blank ones
            assert page.inner_text("#mistake-caption") == f"draw {another} first (Draw " \
                f"{another})"
            assert page.get_attribute("#maps", "data-version") == "errors-drawing-blank"
            assert page.inner_text("#answer") == ""
            if noun == "item":
                page.check('input[value="mistakes"]')
                page.wait_for_function("document.querySelector('#maps').dataset.version === "
                                       "'errors-mistakes-0-0'", timeout=60000)
                index = int(demo.mistakes[0])
                label, read = test_set[1][index], FASHION_MNIST.classes[demo.predicted[index]]
                assert f"MNIST test image #{index}: labelled {label}, read as {read} " in \
                    page.inner_text("#mistake-caption")
                assert page.inner_text("#mistake-caption").endswith(
                    ". Note: the model was trained on fashion-mnist; these are MNIST's images, "
                    "labelled with MNIST's classes")
                page.check('input[value="drawing"]')
                words = page.evaluate("document.body.innerText + [...document.querySelectorAll("
                                      "'[aria-label]')].map(e => e.ariaLabel).join(' ')")
                assert "digit" not in words.lower(), words
                page.click("#view-draw")
                for y in range(4, 290, 12):     # fill the pad with ink, edges and all
                    stroke(page, [(140, 140), (300, y), (-20, y)])
                assert (pad_grey(page) == 0).all()
                page.wait_for_function("document.querySelector('#status').textContent")
                assert page.inner_text("#status") == "the drawing is all one colour: draw " \
                    "an item on the pad, dark on light or light on dark"
    finally:
        page.close()
        httpd.shutdown()
        httpd.server_close()
