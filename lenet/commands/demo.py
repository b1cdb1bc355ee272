"""`lenet demo`: serve the local web page of lenet.demo with a checkpoint or the shipped
weights; the test set's mistakes are found in the background while the page is up."""

import sys

import numpy as np

from lenet.commands.common import (
    UserError,
    add_checkpoint_option,
    add_data_options,
    add_device_option,
    load_model,
    split_of,
)
from lenet.progress import note_if_slow


def add(sub):
    p = sub.add_parser("demo", help="a web page: draw a digit and watch every layer",
                       description="Start a local web server and print its address. Its "
                       "page: a pad to draw a digit on and, on every stroke, the network's "
                       "input 32x32, C1, S2, C3, S4, C5, F6 beside the nearest RBF bitmap, "
                       "the ten penalties and the answer; and a view that steps through "
                       "the test set's mistakes (as `lenet show errors` finds them) and the "
                       "paper's random distortions of an image. The model runs on the "
                       "server; the drawing is prepared as `lenet predict` prepares a file.")
    add_checkpoint_option(p, "a .npz written by `lenet train` (default: the trained "
                          "weights shipped with the package)")
    add_data_options(p)
    add_device_option(p)
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default "
                   "127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="the port (default 8000; 0: any "
                   "free one)")
    return p


def run(args):
    import threading

    from lenet.demo.compute import Demo
    from lenet.demo.server import DemoServer
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must lie in 0..65535, not {args.port}")
    model = load_model(args)
    # the test set in the background: the page is up while it runs
    demo = Demo(model, lambda: split_of(model, args, "test"))
    try:
        server = DemoServer(demo, args.host, args.port)
    except OSError as e:
        raise UserError(f"cannot listen on {args.host} port {args.port}: "
                        f"{e.strerror or e}") from e
    threading.Thread(target=demo.find_mistakes, daemon=True).start()
    with note_if_slow():   # a first drawing's answer without the first run's compiling
        grey = np.full((64, 64), 255.0)
        grey[12:52, 29:35] = 0.0
        for step in (0, 1):
            demo.drawing(grey, step)
    print(f"LeNet-5 demo ({model.device}): {server.url}  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
