"""The commands of `lenet`, one module each, which lenet/cli.py parses and dispatches:
each module's `add(sub)` declares the command's options on the subparsers `sub`, and
its `run(args)` does the work and returns the exit status."""
