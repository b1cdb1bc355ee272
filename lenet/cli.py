"""The `lenet` command (also `python -m lenet`): its parser and dispatch.

    lenet train     train LeNet-5 on an MNIST-format data set, write a checkpoint and a
                    JSON-lines log                                 (lenet/commands/train.py)
    lenet sweep     many runs of the paper's per-pattern recipe side by side (one GPU
                    block or one CPU core each), a checkpoint and a log per run  (sweep.py)
    lenet eval      error rate of a checkpoint on a test (or training) set  (evaluate.py)
    lenet predict   classes of PNG/JPEG files or of IDX entries            (predict.py)
    lenet show      pictures: feature maps, RBF prototypes, curves, errors    (show.py)
    lenet export    the network as an ONNX file                             (export.py)
    lenet demo      a local web page: draw a digit, watch every layer         (demo.py)

Each command's module in lenet/commands/ has an `add(sub)` that declares its options
and a `run(args)` that does the work; lenet/commands/common.py holds what several share
(the data options, loading a checkpoint, UserError). A user's mistake (a missing data
directory, a file that is not a checkpoint, an unreadable image) is reported as one line
`lenet <command>: error: ...` on stderr with exit status 2, never as a traceback; output
cut short by a closed pipe (`| head`) ends quietly. Tested end to end by
tests/test_cli.py (and tests/test_cli_sweep.py).
"""

import argparse
import os
import signal
import sys

from lenet.commands import demo, evaluate, export, predict, show, sweep, train
from lenet.commands.common import UserError

COMMANDS = {"train": train, "sweep": sweep, "eval": evaluate, "predict": predict,
            "show": show, "export": export, "demo": demo}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="lenet", description="LeNet-5 (LeCun et al. 1998) on hand-written CUDA "
        "kernels, with a NumPy reference on the CPU. `lenet COMMAND --help` tells more.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS.values():
        command.add(sub)
    return parser


def main(argv=None):
    # Ctrl-C (and a time limit's SIGINT) must stop a command cleanly even when the parent
    # started it with SIGINT ignored (a background job of a script), which Python keeps
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = COMMANDS[args.command].run(args) or 0
        sys.stdout.flush()  # here, so that a closed pipe is caught below
        return status
    except UserError as e:
        print(f"lenet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`lenet predict ... | head -1`): stop quietly, as Unix
        # tools do, with the status of a process ended by SIGPIPE
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13
