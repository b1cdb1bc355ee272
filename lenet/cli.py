"""The `lenet` command (also `python -m lenet`): its parser and dispatch.

Each command (train, sweep, eval, predict, show, export, demo) is a module of
lenet/commands/ with an `add(sub)` that declares its options and a `run(args)` that does
the work; lenet/commands/common.py holds what several share. A user's mistake is one line
`lenet <command>: error: ...` on stderr with exit status 2, never a traceback; output cut
short by a closed pipe (`| head`) ends quietly. Tested by tests/test_cli.py and
tests/test_cli_sweep.py.
"""

import argparse
import os
import signal
import sys

from lenet.commands import demo, evaluate, export, predict, show, sweep, train
from lenet.commands.common import UserError

COMMANDS = {"train": train, "sweep": sweep, "eval": evaluate, "predict": predict,
            "show": show, "export": export, "demo": demo}


class Parser(argparse.ArgumentParser):
    """argparse, its own mistakes (a bad option or value) one line like the commands'."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` tells more)\n")


def build_parser():
    parser = Parser(
        prog="lenet", description="LeNet-5 (LeCun et al. 1998) on hand-written CUDA "
        "kernels and a compiled, multi-core CPU implementation, both checked against a "
        "float64 reference. `lenet COMMAND --help` tells more.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS.values():
        command.add(sub)
    parser.commands = sub.choices   # name -> its parser
    return parser


def main(argv=None):
    # Ctrl-C (and a time limit's SIGINT) must stop a command cleanly even when the parent
    # started it with SIGINT ignored (a background job of a script), which Python keeps
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:   # named by the command they were given to
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        status = COMMANDS[args.command].run(args) or 0
        sys.stdout.flush()  # here, so that a closed pipe is caught below
        return status
    except UserError as e:
        print(f"lenet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # Ctrl-C where a command has nothing of its own to say
        print(f"\nlenet {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`lenet predict ... | head -1`): stop quietly, as Unix
        # tools do, with the status of a process ended by SIGPIPE
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13
    except OSError as e:  # the machine's refusal (a read-only directory, a full disk)
        where = f": {e.filename}" if e.filename and str(e.filename) not in str(e.strerror) \
            else ""
        print(f"lenet {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
