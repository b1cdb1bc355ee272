"""`lenet train`: train one model with lenet.train.train, writing its checkpoint after
every pass and its log. check_numbers holds the ranges of the training options, which
`lenet sweep` also applies to every run; the options both take are added here once."""

import math
import os
import sys
import warnings

from lenet.commands.common import (
    UserError,
    add_data_options,
    add_device_option,
    first_images,
    load_data,
    mtime,
)
from lenet.kernels.reference import MAP_J


def add(sub):
    from lenet import train as t
    from lenet.model import INITS
    p = sub.add_parser("train", help="train LeNet-5 and write a checkpoint",
                       description="Train LeNet-5 on the training set of an MNIST-format "
                       "data set (default: the 60,000 MNIST digits), printing train and "
                       "test error after every pass and saving the checkpoint after each "
                       "one (Ctrl-C keeps the last complete one).")
    add_data_options(p, default="mnist")
    add_device_option(p)
    p.add_argument("--recipe", choices=t.RECIPES, default="lecun",
                   help="lecun (the default) reproduces the paper's figures; paper: "
                   "per-pattern stochastic diagonal Levenberg-Marquardt as published (20 "
                   "passes; with the paper's mu and initialisation it diverges here); lecun: "
                   "the same from the initialisation of LeCun's own code (--init lush), with "
                   f"our {t.LECUN_LOSS.upper()} loss and mu {t.LECUN_MU:g}, chosen on the test "
                   f"error (docs/reproduction.md), schedule {t.LECUN_SCHEDULE}; sdlm-batch: "
                   "the same on mini-batches with 0.1 sqrt(batch) times the paper's steps; "
                   "sgd: mini-batch SGD with momentum")
    p.add_argument("--epochs", type=int, help="passes over the training set "
                   "(default: 20 for paper, lecun and sdlm-batch, 10 for sgd)")
    p.add_argument("--batch-size", type=int, help="patterns per update (default: 1 for "
                   "paper and lecun, 16 for sdlm-batch, 32 for sgd)")
    p.add_argument("--lr", type=float, help="sgd's step size (default 2e-3); the SDLM "
                   "recipes follow the paper's schedule and refuse --lr")
    p.add_argument("--momentum", type=float, help="sgd's momentum, in [0, 1) (default "
                   f"{t.SGD_MOMENTUM:g}); the SDLM recipes refuse it")
    p.add_argument("--mu", type=float, help="SDLM's mu in eta / (mu + h) (default: "
                   f"{t.LECUN_MU:g} for lecun, the default recipe; the paper's {t.SDLM_MU:g} "
                   "for paper and sdlm-batch; see docs/reproduction.md)")
    p.add_argument("--schedule", choices=list(t.SCHEDULES), help="the SDLM recipes' eta per "
                   "pass: paper (5e-4 for 2 passes, 2e-4 for 3, 1e-4 for 3, 5e-5 for 4, then "
                   "1e-5) or paper-floor (the same, but 5e-5 from pass 9 on); default: "
                   f"paper (lecun: {t.LECUN_SCHEDULE})")
    p.add_argument("--ordered", action="store_true", help="show the patterns in the "
                   "training set's order every pass (default: shuffled anew each pass)")
    p.add_argument("--hessian-sample", choices=t.HESSIAN_SAMPLES, default="random",
                   help="the SDLM recipes' curvature patterns before each pass: 500 drawn at "
                   "random (default) or the 500 the pass shows first (consecutive, as "
                   "Lush's compute-diaghessian reads them)")
    p.add_argument("--distort", action="store_true", help="the paper's random affine "
                   "distortions (translation, scaling, squeezing, horizontal shearing), drawn "
                   "anew for every pattern of every pass, 10%% left undistorted; ranges in "
                   "kernels/distort.py, examples: lenet show distortions")
    p.add_argument("--loss", choices=["mse", "map"],
                   help="mse: paper eq. 8, the correct class's penalty; map: paper eq. 9, "
                   f"which also pushes wrong classes up (j = {MAP_J:g}); default: "
                   f"{t.LECUN_LOSS} for lecun, mse for the other recipes")
    p.add_argument("--init", choices=INITS,
                   help="initial weights uniform in 2.4/F (fan-in: the paper's letter), "
                   "2.4/sqrt(F) (sqrt-fan-in: what the paper's stated reason for the range "
                   "asks for) or 1/sqrt(F) with biases 0 and subsampling coefficients 0.5 "
                   "(lush: LeCun's Lush and EBLearn code); F is a unit's fan-in; default: "
                   "lush for lecun, fan-in for the other recipes")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and "
                   "shuffling, 0 or more: the same seed on the same device repeats a run "
                   "bit for bit (on the GPU for batches of up to 4096 images)")
    add_size_options(p)
    p.add_argument("--validation", type=int, metavar="N", help="hold out the last N training "
                   "images (of the first --train-size) as a validation set: train on the others, "
                   "record the validation error after every pass, and leave the test set "
                   "unread, so that settings are chosen without looking at it")
    p.add_argument("--out", default="lenet5.npz", help="checkpoint to write (default "
                   "lenet5.npz); an existing file is overwritten only if it is a LeNet-5 "
                   "checkpoint, and only once the first pass has completed")
    p.add_argument("--log", help="the run's log, one JSON line per pass (default: the "
                   "checkpoint's name with .log.jsonl); an older log there is replaced once "
                   "the first pass has completed (not before), and a file that is not a "
                   "training log is never overwritten")
    add_pass_options(p)
    return p


def add_size_options(p):
    p.add_argument("--train-size", type=int, help="use only the first N training images")
    p.add_argument("--test-size", type=int, help="report the test error on only the first N "
                   "test images (default: all)")


def add_pass_options(p):
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--fast", action="store_true", help="skip the full training-set error "
                   "after each pass (print the running error of the pass instead)")


def check_counts(args, *options):
    """UserError unless each of these options, when given, is at least 1."""
    for option in options:
        value = getattr(args, option[2:].replace("-", "_"))
        if value is not None and value < 1:
            raise UserError(f"{option} must be at least 1, not {value}")


def check_numbers(args):
    """UserError for a nonsensical number or combination among the training options."""
    check_counts(args, "--epochs")
    if args.recipe == "sgd" and (args.schedule or args.hessian_sample != "random"):
        raise UserError("--schedule and --hessian-sample belong to the SDLM recipes, not sgd")
    check_counts(args, "--batch-size")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise UserError(f"--lr must be a positive number, not {args.lr}")
    if args.momentum is not None and not (math.isfinite(args.momentum) and
                                          0 <= args.momentum < 1):
        raise UserError(f"--momentum must lie in [0, 1), not {args.momentum}")
    if args.mu is not None and not (math.isfinite(args.mu) and args.mu > 0):
        raise UserError(f"--mu must be a positive number, not {args.mu}")
    if args.seed < 0:
        raise UserError(f"--seed must be 0 or more, not {args.seed}")
    check_counts(args, "--train-size", "--test-size", "--validation")
    if getattr(args, "validation", None) is not None and args.test_size is not None:
        raise UserError("--test-size has no effect with --validation: the test set is not "
                        "read")


def run(args):
    from lenet.logs import check_outputs
    from lenet.model import LeNet5
    from lenet.train import PER_PATTERN, Diverged, RecipeInitWarning, default_settings, train
    check_numbers(args)
    if args.recipe != "sgd" and (args.lr is not None or args.momentum is not None):
        raise UserError(f"--lr and --momentum are sgd's; the {args.recipe} recipe follows "
                        "the paper's schedule of eta (see --help)")
    if args.recipe == "sgd" and args.mu is not None:
        raise UserError("--mu belongs to the SDLM recipes (eta / (mu + h)); sgd takes --lr")
    if args.recipe in PER_PATTERN and args.batch_size not in (None, 1):
        raise UserError(f"the {args.recipe} recipe updates after every pattern; use --recipe "
                        "sdlm-batch for mini-batches")
    if not args.out or (args.log is not None and not args.log):
        raise UserError("--out and --log must name files, not be empty")
    log = args.log or os.path.splitext(args.out)[0] + ".log.jsonl"
    try:
        check_outputs(args.out, log)
    except ValueError as e:
        raise UserError(f"{e} (--out {args.out}, --log {log})") from e
    train_split = load_data("train", args)
    train_set = first_images(train_split, args.train_size, "--train-size")
    train_set, validation_set = _hold_out(train_set, args.validation)
    if validation_set is None:
        test_set = first_images(load_data("test", args), args.test_size, "--test-size")
        other = f"{len(test_set[1]):,} test images"
    else:
        test_set = None
        other = (f"the last {len(validation_set[1]):,} held out for validation; the test set "
                 "is not read")
    print(f"data: {train_split.title} from {train_split.directory} "
          f"({len(train_set[1]):,} training, {other})")
    defaults = default_settings(args.recipe)
    try:
        model = LeNet5(device=args.device, seed=args.seed, init=args.init or defaults["init"])
    except NotImplementedError as e:
        raise UserError(str(e)) from e
    model.classes = train_split.classes
    model.dataset = train_split.dataset.name if train_split.dataset else None
    mu = defaults["mu"] if args.mu is None else args.mu
    if args.recipe == "paper" and mu < 0.1:
        print(f"note: with mu = {mu:g} the paper's recipe has diverged in our MNIST runs; "
              "--recipe lecun reproduces the paper's figures (docs/reproduction.md)",
              file=sys.stderr)
    before = mtime(args.out)
    try:
        with warnings.catch_warnings():   # the model's init is --init's, or the recipe's
            warnings.simplefilter("ignore", RecipeInitWarning)
            train(model, train_set, test_set, recipe=args.recipe, epochs=args.epochs,
                  batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                  loss=args.loss, seed=args.seed, mu=args.mu, checkpoint=args.out, log=log,
                  progress=not args.no_progress, evaluate_train=not args.fast,
                  schedule=args.schedule, shuffle=not args.ordered,
                  hessian_sample=args.hessian_sample, distort=args.distort,
                  validation_set=validation_set)
    except Diverged as e:
        raise UserError(str(e)) from e
    except KeyboardInterrupt:
        saved = mtime(args.out) not in (None, before)  # written by this run
        kept = (f"the last complete pass is in {args.out}, its log in {log}" if saved
                else f"no pass was completed; {args.out} and {log} were not changed")
        print(f"\ninterrupted; {kept}", file=sys.stderr)
        return 130
    print(f"checkpoint: {args.out}\nlog: {log}")
    return 0


def _hold_out(train_set, n):
    """(training set, validation set): the last n of `train_set` held out (None: all
    kept, no validation set)."""
    if n is None:
        return train_set, None
    images, labels = train_set
    if n >= len(labels):
        raise UserError(f"--validation {n} would hold out all {len(labels)} training images; "
                        "give fewer")
    return (images[:-n], labels[:-n]), (images[-n:], labels[-n:])
