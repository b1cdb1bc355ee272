"""Pictures of LeNet-5 as PNG files of fixed sizes (FIGSIZE at DPI), drawn on matplotlib's
Agg canvas (no display needed): every layer's output for one digit (draw_maps), the RBF
prototypes, training curves from a log, a confusion matrix with the surest mistakes
(draw_errors), the paper's random distortions. Grey maps use one scale for every squashed
layer, white -1.7159 to black +1.7159 (the range of f(a) = 1.7159 tanh(2a/3)), so ink
reads dark as on paper. Each file is written whole or not at all, and marked (MARK) so
that `lenet show MODE` (lenet/commands/show.py), which draws them, replaces only its own;
tests/test_cli.py checks that each writes a PNG of its size, and the data the curves and
distortions figures plot.
"""

import json
import math

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter
from PIL import Image

from lenet.checkpoint import write_atomically
from lenet.datasets import DIGITS
from lenet.kernels.architecture import (
    BITMAP_HEIGHT,
    BITMAP_WIDTH,
    INPUT_BACKGROUND,
    INPUT_INK,
    RBF_CENTERS,
    SQUASH_A,
)
from lenet.logs import LOG_KEYS, LOG_OPTIONAL_KEYS
from lenet.model import finite

DPI = 100
FIGSIZE = {"maps": (14, 7), "prototypes": (10, 2.5), "curves": (10, 4), "errors": (14, 6.5),
           "distortions": (13, 11.5)}
SQUASH = SQUASH_A     # f(a) lies in (-SQUASH, SQUASH)
INPUT_RANGE = (INPUT_BACKGROUND, INPUT_INK)  # lenet.data.preprocess: background, full ink
MAX_ERRORS = 24       # the mistakes grid of draw_errors: 4 rows of 6
WINNER, OTHERS = "tab:red", "0.7"
# the PNG text of every picture drawn here: `lenet show` replaces only files that have it
SOFTWARE = "lenet show"
MARK = {"Software": f"{SOFTWARE}, Matplotlib {matplotlib.__version__}"}


class LogError(ValueError):
    """A training log that cannot be read."""


class _PlainLogFormatter(LogFormatter):
    """Log-axis labels as plain numbers (0.6, 2, 10), thinned as LogFormatter thins them."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def _figure(kind):
    fig = Figure(figsize=FIGSIZE[kind], dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    """Write fig as a PNG marked as ours (MARK) to path, atomically; path."""
    write_atomically(path, lambda f: fig.savefig(f, dpi=DPI, format="png", metadata=MARK),
                     ".png.tmp")
    return path


def drew(path):
    """Whether the file at path is a PNG that this module drew (its MARK)."""
    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.text.get("Software", "").startswith(SOFTWARE)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def _grey(ax, image, vmin=-SQUASH, vmax=SQUASH):
    ax.imshow(image, cmap="gray_r", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _maps_column(fig, cell, maps, columns):
    """Draw (K,H,W) maps in a grid of `columns` columns inside one gridspec cell."""
    rows = math.ceil(len(maps) / columns)
    grid = cell.subgridspec(rows, columns, wspace=0.08, hspace=0.08)
    for k, m in enumerate(maps):
        _grey(fig.add_subplot(grid[k % rows, k // rows]), m)


def draw_maps(path, activations, caption, classes=DIGITS):
    """Every layer of one image. activations: host arrays [input (1,1,32,32),
    C1 (1,6,28,28), S2 (1,6,14,14), C3 (1,16,10,10), S4 (1,16,5,5), C5 (1,120),
    F6 (1,84), penalties (1,10)], as LeNet5.forward_all returns them; classes: the ten
    class names."""
    x0, c1, s2, c3, s4, c5, f6, y = (np.asarray(a, np.float64)[0] for a in activations)
    winner = int(y.argmin())
    fig = _figure("maps")
    fig.suptitle(f"{caption}: LeNet-5 says {classes[winner]}", fontsize=14)
    columns = fig.add_gridspec(1, 8, width_ratios=[2.2, 1, 1, 1.7, 1.7, 1, 1.1, 2.4],
                               left=0.02, right=0.985, top=0.86, bottom=0.08, wspace=0.3)
    titles = ["input 32x32", "C1 6@28x28", "S2 6@14x14", "C3 16@10x10", "S4 16@5x5",
              "C5 120\n(as 20x6)", "F6 84\n(as 7x12)",
              "output: RBF penalties"]
    for k, title in enumerate(titles):
        box = columns[0, k].get_position(fig)
        fig.text((box.x0 + box.x1) / 2, 0.875, title, ha="center", va="bottom", fontsize=11)

    _grey(fig.add_subplot(columns[0, 0]), x0[0], *INPUT_RANGE)
    for k, (maps, width) in enumerate([(c1, 1), (s2, 1), (c3, 2), (s4, 2)], start=1):
        _maps_column(fig, columns[0, k], maps, width)
    _grey(fig.add_subplot(columns[0, 5]), c5.reshape(20, 6))
    f6_cell = columns[0, 6].subgridspec(2, 1, hspace=0.15)
    for k, (image, label) in enumerate([(f6, "F6 output"),
                                        (RBF_CENTERS[winner], f"RBF bitmap {winner}")]):
        ax = fig.add_subplot(f6_cell[k])
        _grey(ax, image.reshape(BITMAP_HEIGHT, BITMAP_WIDTH))
        ax.set_xlabel(label, fontsize=9)

    ax = fig.add_subplot(columns[0, 7].subgridspec(5, 1)[1:4])
    digits = np.arange(10)
    ax.barh(digits, y, color=[WINNER if d == winner else OTHERS for d in digits])
    ax.set_yticks(digits)  # names that are words go beside the values (too wide here)
    ax.invert_yaxis()
    named = tuple(classes) != DIGITS
    ax.set_xlim(0, y.max() * (1.6 if named else 1.3))
    for d in digits:  # the winner's bar may be too short to see: colour its labels too
        ax.text(y[d], d, f" {y[d]:.1f}" + (f"  {classes[d]}" if named else ""), va="center",
                fontsize=8, color=WINNER if d == winner else "black")
    ax.get_yticklabels()[winner].set(color=WINNER, fontweight="bold")
    ax.set_xlabel("penalty (smaller wins)")
    ax.set_ylabel("class" if named else "digit")
    ax.spines[["top", "right"]].set_visible(False)
    fig.text(0.5, 0.015, f"grey scale of every layer after the input: white -{SQUASH}, "
             f"black +{SQUASH} (the range of the squashing function); input: white "
             f"background {INPUT_BACKGROUND}, black ink {INPUT_INK}", ha="center", fontsize=9,
             color="0.3")
    return _save(fig, path)


def draw_prototypes(path):
    """The ten RBF bitmaps (lenet.RBF_CENTERS, +1 ink), one panel per digit."""
    fig = _figure("prototypes")
    fig.suptitle("the output layer's ten RBF prototypes (7x12; ink +1, background -1)",
                 fontsize=12)
    grid = fig.add_gridspec(1, 10, left=0.02, right=0.98, top=0.78, bottom=0.04, wspace=0.25)
    for d in range(10):
        ax = fig.add_subplot(grid[0, d])
        bitmap = RBF_CENTERS[d].reshape(BITMAP_HEIGHT, BITMAP_WIDTH)
        _grey(ax, bitmap, -1.6, 1.2)  # -1 light grey, +1 black
        ax.set_xticks(np.arange(-0.5, BITMAP_WIDTH), minor=True)
        ax.set_yticks(np.arange(-0.5, BITMAP_HEIGHT), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.6)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
        ax.set_title(str(d), fontsize=11)
    return _save(fig, path)


def _number(value):
    """Whether a JSON value is a finite number (not a bool, nor an int past float's range)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and finite(value)


def read_log(path):
    """The per-pass records of a `lenet train` JSON-lines log, sorted by pass."""
    try:
        with open(path) as f:
            lines = [line for line in f if line.strip()]
    except FileNotFoundError:
        raise LogError(f"{path}: no such log file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LogError(f"{path}: cannot read it ({e})") from e
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            raise LogError(f"{path}: line {number} is not JSON; not a log of "
                           "`lenet train`") from None
        if not isinstance(record, dict):
            record = {}
        bad = [k for k in LOG_KEYS if not _number(record.get(k))]
        bad += [k for k in LOG_OPTIONAL_KEYS if not (record.get(k) is None
                                                     or _number(record[k]))]
        if bad:
            raise LogError(f"{path}: line {number} has no number {', '.join(bad)}; not a "
                           "log of `lenet train`")
        negative = [k for k in (*LOG_KEYS, *LOG_OPTIONAL_KEYS) if (record.get(k) or 0) < 0]
        if negative:  # no error rate or loss is negative
            raise LogError(f"{path}: line {number} has a negative {', '.join(negative)}; "
                           "not a log of `lenet train`")
        if not isinstance(record["pass"], int) or not 1 <= record["pass"] < 2 ** 31:
            raise LogError(f"{path}: line {number} has pass {repr(record['pass'])[:24]}; "
                           "not a log of `lenet train`")
        records.append(record)
    if not records:
        raise LogError(f"{path}: empty log, no pass recorded")
    return sorted(records, key=lambda r: r["pass"])


CURVES = {  # log key: (axis, style, colour, alpha, label); the axis 0 is error, 1 loss
    "test_error": (0, "o-", "tab:red", 1.0, "test error"),
    "validation_error": (0, "D-", "tab:green", 1.0, "validation error"),
    "train_error": (0, "s-", "tab:blue", 1.0, "training error"),
    "running_train_error": (0, "^--", "tab:blue", 0.5, "training error during the pass"),
    "train_loss": (1, "o-", "0.3", 1.0, "training loss"),
}


def draw_curves(path, records, caption):
    """Draw error rates (percent) and training loss per pass, each on a log axis. A zero
    has no place on a log axis: it is left out of its line and marked by a triangle of the
    line's colour on the axis's bottom edge (one legend entry says so); an axis with no
    value above zero is linear."""
    passes = np.array([r["pass"] for r in records])
    fig = _figure("curves")
    fig.suptitle(f"training of {caption}", fontsize=12)
    axes = fig.subplots(1, 2, gridspec_kw={"left": 0.08, "right": 0.98, "bottom": 0.13,
                                           "top": 0.86, "wspace": 0.22})
    scale, unit = (100, 1), ("%", "")
    curves = {key: scale[axis] * np.array([np.nan if r.get(key) is None else r[key]
                                           for r in records], np.float64)
              for key, (axis, *_) in CURVES.items()}
    for index, ax in enumerate(axes):
        values = [v for key, v in curves.items() if CURVES[key][0] == index]
        log, zeros = any(np.any(v > 0) for v in values), False
        for key, (axis, style, color, alpha, label) in CURVES.items():
            v = curves[key]
            drawn = ~np.isnan(v)
            if axis != index or not drawn.any():  # train_error under `lenet train --fast`
                continue
            last = np.flatnonzero(drawn)[-1]
            when = "the end" if last == len(v) - 1 else f"pass {passes[last]}"
            end = f"{v[last]:.2f}%" if unit[index] else f"{v[last]:.3g}"
            zero = drawn & (v <= 0) if log else np.zeros(len(v), bool)
            ax.plot(passes, np.where(zero, np.nan, v), style, color=color, alpha=alpha,
                    label=f"{label}: {end} at {when}")
            if zero.any():  # at the bottom edge: x in data, y in axes coordinates
                ax.plot(passes[zero], np.zeros(zero.sum()), "v", color=color, alpha=alpha,
                        clip_on=False, transform=ax.get_xaxis_transform(),
                        label=f"_{key} zeros")  # "_": explained by one entry below
                zeros = True
        if zeros:
            ax.plot([], [], "v", color="0.4", label=f"0{unit[index]} (off the log scale): on the "
                    "bottom edge")
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
            ax.yaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False,
                                                            minor_thresholds=(2, 0.5)))
        ax.legend(fontsize=9)
        ax.set_xlabel("pass")
        ax.set_xticks(passes if len(passes) <= 20 else ax.get_xticks())
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("error (%)")
    axes[0].set_title("error rate", fontsize=11)
    axes[1].set_ylabel("mean loss per pattern")
    axes[1].set_title("training loss", fontsize=11)
    return _save(fig, path)


def surest_mistakes(labels, penalties, count):
    """Indices of misclassified digits, largest margin first, at most `count`.
    The margin is the second smallest penalty minus the smallest."""
    two = np.partition(penalties, 1, axis=1)[:, :2]
    margin = two[:, 1] - two[:, 0]
    wrong = np.flatnonzero(penalties.argmin(axis=1) != labels)
    return wrong[np.argsort(-margin[wrong], kind="stable")][:count], margin


def draw_errors(path, images, labels, penalties, count=MAX_ERRORS, caption="",
                classes=DIGITS, data="MNIST test digits"):
    """Confusion matrix and the `count` surest mistakes. images uint8 (N,28,28),
    labels (N,), penalties (N,10); classes: the ten class names; data: what the images
    are ("MNIST test digits")."""
    predicted = penalties.argmin(axis=1)
    counts = np.zeros((10, 10), np.int64)  # the confusion matrix: row true, column predicted
    np.add.at(counts, (labels, predicted), 1)
    errors = int(len(labels) - np.trace(counts))
    fig = _figure("errors")
    fig.suptitle(f"{caption} on the {len(labels):,} {data}: {errors} errors "
                 f"({100 * errors / max(len(labels), 1):.2f}%)", fontsize=14)

    named = tuple(classes) != DIGITS  # word labels need more room
    ax = fig.add_axes([0.1, 0.15, 0.31, 0.72] if named else [0.05, 0.09, 0.36, 0.78])
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="white")
    ax.imshow(np.ma.masked_equal(counts, 0), cmap=cmap,
              norm=LogNorm(vmin=1, vmax=max(2, counts.max())))
    for (t, p), n in np.ndenumerate(counts):
        if n:
            dark = n > counts.max() ** 0.6
            ax.text(p, t, str(n), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    # tick labels: each class's name, with its number when the name is a word
    names = [c if c == str(k) else f"{c} ({k})" for k, c in enumerate(classes)]
    ax.set_xticks(range(10), names, rotation=45 if named else 0,
                  ha="right" if named else "center", fontsize=8 if named else None)
    ax.set_yticks(range(10), names, fontsize=8 if named else None)
    ax.set_xlabel("predicted " + ("class" if named else "digit"))
    ax.set_ylabel("true " + ("class" if named else "digit"))
    ax.set_title("confusion matrix (counts)", fontsize=11)

    worst, margin = surest_mistakes(labels, penalties, count)
    grid = fig.add_gridspec(4, 6, left=0.47, right=0.99, top=0.84, bottom=0.04,
                            wspace=0.1, hspace=0.45)
    fig.text(0.73, 0.875, "the surest mistakes: true→predicted (margin between the two "
             "smallest penalties)", ha="center", fontsize=11)
    for k, i in enumerate(worst):
        sub = fig.add_subplot(grid[k // 6, k % 6])
        _grey(sub, images[i], 0, 255)
        sub.set_title(f"{classes[labels[i]]}→{classes[predicted[i]]}",
                      fontsize=7 if named else 11, color=WINNER, pad=2)
        sub.set_xlabel(f"#{i}  {margin[i]:.1f}", fontsize=7, labelpad=1)
    if not len(worst):
        fig.text(0.73, 0.45, "no mistakes", ha="center", fontsize=14)
    return _save(fig, path)


def draw_distortions(path, originals, distorted, caption="", classes=DIGITS, missing=()):
    """Training digits and their random affine distortions: originals (R,1,32,32) and
    distorted (R,K,32,32), preprocessed images, one row per class in class order; the
    classes numbered in `missing` (no image of theirs) keep their rows, empty but for a
    note, so that every row is still its class's (R + len(missing) rows in all)."""
    images, columns = iter(zip(originals[:, 0], distorted, strict=True)), distorted.shape[1]
    rows = len(originals) + len(missing)
    fig = _figure("distortions")
    fig.suptitle(f"random affine distortions ({caption}): translation, scaling, squeezing, "
                 "horizontal shearing", fontsize=13)
    grid = fig.add_gridspec(rows, columns + 1, left=0.02, right=0.98, top=0.93, bottom=0.02,
                            wspace=0.08, hspace=0.08)
    for r in range(rows):
        if r in missing:
            ax = fig.add_subplot(grid[r, :])
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"no training image of class {classes[r]} in the data",
                    ha="center", va="center", fontsize=12, color="0.3")
            continue
        original, row = next(images)
        for c, image in enumerate([original, *row]):
            _grey(fig.add_subplot(grid[r, c]), image, *INPUT_RANGE)
    fig.text(0.02 + 0.96 / (columns + 1) / 2, 0.935, "original", ha="center", fontsize=10)
    return _save(fig, path)
