"""The demo's latency: from a drawing sent to its answer (every layer) back, as `lenet
demo` serves it, and optionally the page's own time from the last ink to the answer drawn.

    python -m bench.demo_latency --checkpoint FILE [--data DIR] [--requests 200]
        [--browser] [--screenshots docs] [--out bench/results/DATE-demo-latency/run.json]

The server runs as `python -m lenet demo` in its own process (as a user starts it) on
the CPU, and is timed once its background pass over the test set is done. Each request
is what the page sends on a stroke: a 280x280 pad (the page's size), here an MNIST
test digit drawn 200 pixels tall in black on white, one request at a time on one
kept-alive connection. Before timing, the first CHECKED answers are compared with
`lenet predict`'s pipeline on a PNG of the same pixels (lenet.images.mnist_digit,
lenet.data.preprocess, LeNet5.forward): the same class, penalties within 1e-3. Then
WARMUP requests, then --requests timed ones, each a different digit. Reported: the
median, 95th percentile and maximum of the round trip (send to JSON parsed), and of the
server's own compute time ("ms" in the answer); the target is a 95th percentile under
TARGET_MS.

--browser: Chromium (Playwright, /usr/bin/chromium) draws --requests strokes on the
page; the page records the time from its last change of ink to that drawing's answer
drawn (the #maps element's data-latency). --screenshots DIR: docs pictures of both
views (demo.png, demo-errors.png). Also reported: the CPU time per request of the
server process and of this client, which a loaded machine does not inflate as it
inflates the wall-clock times. Results go to --out FILE as JSON.
"""

import argparse
import base64
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench.machine import cpu_model, git_commit, now

TARGET_MS = 50.0
PAD = 280          # the page's pad, pixels
DIGIT = 200        # drawn size of a digit on it
CHECKED = 20
WARMUP = 20
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def pad_drawing(digit):
    """uint8 (PAD,PAD) black-on-white pad holding an MNIST digit (28,28) drawn large."""
    from PIL import Image
    big = np.asarray(Image.fromarray(digit).resize((DIGIT, DIGIT), Image.Resampling.BILINEAR))
    pad = np.zeros((PAD, PAD), np.uint8)
    at = (PAD - DIGIT) // 2
    pad[at:at + DIGIT, at:at + DIGIT] = big
    return 255 - pad


def body(grey):
    return json.dumps({"width": PAD, "height": PAD,
                       "pixels": base64.b64encode(grey.tobytes()).decode()}).encode()


def start_server(checkpoint, data):
    """(process, host, port) of `python -m lenet demo` on a free port."""
    command = [sys.executable, "-m", "lenet", "demo", "--checkpoint", checkpoint, "--port",
               "0", "--device", "cpu"] + (["--data", data] if data else [])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    found = re.search(r"http://([\d.]+):(\d+)/", line)
    if not found:
        process.kill()
        raise SystemExit(f"the demo did not start: {line!r}")
    return process, found.group(1), int(found.group(2))


def wait_ready(conn, limit=600):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        conn.request("GET", "/api/info")
        info = json.loads(conn.getresponse().read())
        if info["mistakes"] != "computing":
            return info
        time.sleep(0.5)
    raise SystemExit("the demo's test-set pass did not finish")


def ask(conn, data):
    """(seconds for the round trip, answer)."""
    start = time.perf_counter()
    conn.request("POST", "/api/draw", data, {"Content-Type": "application/json"})
    reply = conn.getresponse()
    answer = json.loads(reply.read())
    seconds = time.perf_counter() - start
    if reply.status != 200:
        raise SystemExit(f"the demo refused a drawing: {answer}")
    return seconds, answer


def check(answers, drawings, checkpoint):
    """The answers are lenet predict's for PNG files of the same pixels."""
    from PIL import Image

    from lenet.data import preprocess
    from lenet.images import mnist_digit
    from lenet.model import LeNet5
    model = LeNet5.load(checkpoint, device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        for k, (answer, grey) in enumerate(zip(answers, drawings, strict=True)):
            path = os.path.join(folder, f"{k}.png")
            Image.fromarray(grey).save(path)
            y = np.asarray(model.forward(preprocess(mnist_digit(path))))[0]
            if answer["answer"] != int(y.argmin()) or not np.allclose(
                    answer["penalties"], y, rtol=1e-5, atol=1e-3):
                raise SystemExit(f"drawing {k}: the demo says {answer['answer']} "
                                 f"{answer['penalties']}, lenet predict {y.argmin()} {y}")


def summary(samples_ms):
    s = np.asarray(samples_ms)
    return {"count": len(s), "median_ms": float(np.median(s)),
            "p95_ms": float(np.percentile(s, 95)), "max_ms": float(s.max()),
            "mean_ms": float(s.mean())}


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def http_latency(host, port, pid, checkpoint, images, requests):
    import http.client
    conn = http.client.HTTPConnection(host, port, timeout=120)
    info = wait_ready(conn)
    drawings = [pad_drawing(images[k]) for k in range(CHECKED + WARMUP + requests)]
    bodies = [body(g) for g in drawings]
    checked = [ask(conn, b)[1] for b in bodies[:CHECKED]]
    check(checked, drawings[:CHECKED], checkpoint)
    for b in bodies[CHECKED:CHECKED + WARMUP]:
        ask(conn, b)
    trips, computes = [], []
    server_cpu, client_cpu = cpu_seconds(pid), time.process_time()
    for b in bodies[CHECKED + WARMUP:]:
        seconds, answer = ask(conn, b)
        trips.append(1000 * seconds)
        computes.append(answer["ms"])
    client_cpu = time.process_time() - client_cpu
    server_cpu = cpu_seconds(pid) - server_cpu if server_cpu is not None else None
    conn.close()
    cpu = {"server_ms_per_request": 1000 * server_cpu / requests if server_cpu else None,
           "client_ms_per_request": 1000 * client_cpu / requests}
    return info, {"round_trip": summary(trips), "server_compute": summary(computes),
                  "cpu_time": cpu,
                  "request_bytes": len(bodies[-1]), "samples_ms": [round(t, 3) for t in trips]}


STROKES = [[(140, 40), (142, 240)],
           [(70, 60), (200, 60), (120, 235)],
           [(80, 80), (140, 40), (200, 80), (80, 230), (210, 230)],
           [(190, 60), (80, 150), (210, 150), (180, 40), (170, 240)]]


def draw(page, points, jitter=(0, 0)):
    box = page.locator("#pad").bounding_box()
    x0, y0 = box["x"] + jitter[0], box["y"] + jitter[1]
    page.mouse.move(x0 + points[0][0], y0 + points[0][1])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x0 + x, y0 + y, steps=6)
    page.mouse.up()


def settle(page):
    page.wait_for_function("document.querySelector('#maps').dataset.version === "
                           "document.querySelector('#pad').dataset.version && "
                           "document.body.dataset.busy === '0'", timeout=60000)


def curve(t0, t1, f, n=24):
    return [f(t0 + (t1 - t0) * i / (n - 1)) for i in range(n)]


def two():
    """A hand-drawn-looking 2: an arc, a diagonal, a base."""
    arc = curve(math.pi * 1.05, math.pi * 2.25, lambda t: (140 + 62 * math.cos(t),
                                                           105 + 55 * math.sin(t)))
    return arc + [(85, 225), (92, 222), (205, 226)]


def browser(url, strokes, screenshots):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = chromium.new_page(viewport={"width": 1440, "height": 640})
        page.goto(url)
        samples = []
        for k in range(WARMUP + strokes):
            page.click("#clear")
            draw(page, STROKES[k % len(STROKES)], (k % 7 - 3, k % 5 - 2))
            settle(page)
            if k >= WARMUP:
                samples.append(float(page.get_attribute("#maps", "data-latency")))
        if screenshots:
            page.click("#clear")
            draw(page, two())
            settle(page)
            page.screenshot(path=os.path.join(screenshots, "demo.png"))
            page.click("#view-errors")
            page.wait_for_function("document.querySelector('#maps').dataset.version === "
                                   "'errors-mistakes-0-0'", timeout=120000)
            page.click("#next-step")
            page.wait_for_function("document.querySelector('#maps').dataset.version === "
                                   "'errors-mistakes-0-1'", timeout=60000)
            page.screenshot(path=os.path.join(screenshots, "demo-errors.png"))
        chromium.close()
    return {"stroke_to_answer_drawn": summary(samples), "chromium": CHROMIUM,
            "samples_ms": [round(t, 3) for t in samples]}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.demo_latency",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", default=os.environ.get("LENET_DATA"),
                        help="MNIST's directory (default $LENET_DATA)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--browser", action="store_true")
    parser.add_argument("--screenshots", metavar="DIR")
    parser.add_argument("--out", metavar="FILE", help="write the results here (JSON)")
    args = parser.parse_args(argv)
    from lenet.data import load_mnist
    images = load_mnist("test", args.data)[0]
    process, host, port = start_server(args.checkpoint, args.data)
    try:
        info, http = http_latency(host, port, process.pid, args.checkpoint, images,
                                  args.requests)
        result = {"when": now(), "commit": git_commit(), "cpu": cpu_model(),
                  "cores": os.cpu_count(), "load_average_before": os.getloadavg(),
                  "device": info["device"], "requests": args.requests,
                  "target_p95_ms": TARGET_MS, "http": http}
        if args.browser or args.screenshots:
            result["browser"] = browser(f"http://{host}:{port}/", args.requests,
                                        args.screenshots)
        result["load_average_after"] = os.getloadavg()
    finally:
        process.terminate()
        process.wait(timeout=60)
    for name, part in [("HTTP round trip", http["round_trip"]),
                       ("server compute", http["server_compute"])] + (
            [("page: last ink to answer drawn", result["browser"]["stroke_to_answer_drawn"])]
            if "browser" in result else []):
        print(f"{name:32s} median {part['median_ms']:6.1f} ms  95th percentile "
              f"{part['p95_ms']:6.1f} ms  max {part['max_ms']:6.1f} ms  ({part['count']})")
    cpu = http["cpu_time"]
    if cpu["server_ms_per_request"] is not None:
        print(f"CPU time per request: server {cpu['server_ms_per_request']:.1f} ms, "
              f"client {cpu['client_ms_per_request']:.1f} ms (whatever the load)")
    met = "met" if http["round_trip"]["p95_ms"] < TARGET_MS else "NOT met"
    print(f"target: 95th percentile under {TARGET_MS:g} ms: {met}"
          f" (load average {result['load_average_before'][0]:.2f} before, "
          f"{result['load_average_after'][0]:.2f} after, {os.cpu_count()} cores)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
