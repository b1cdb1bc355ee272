"""The demo's computation: one digit through every layer of the project's own model.

A drawing is prepared exactly as `lenet predict` prepares an image file (lenet.images'
ink and center_digit, placed as the model's data set placed its images, then
lenet.data.preprocess); the mistakes are those `lenet show errors` draws
(lenet.train.penalties over the test set, lenet.show.surest_mistakes), all of them.
Every answer holds each layer's activations (LeNet5.forward_all), the ten penalties and
the class; `distortion(step)` gives the paper's affine distortions with their
translation, scale, squeeze and shear in words. Tested by tests/test_demo.py.
"""

import contextlib
import threading
import time

import numpy as np

from lenet.data import preprocess
from lenet.images import MIN_CONTRAST, center_digit, ink, layout
from lenet.kernels.architecture import RBF_CENTERS
from lenet.kernels.distort import RANGES, distort_cpu, draw_distortions
from lenet.show import surest_mistakes
from lenet.train import penalties

LAYERS = ("input", "C1", "S2", "C3", "S4", "C5", "F6")
MAX_STEP = 10_000   # distortion steps: 0 is the image itself, 1..MAX_STEP the paper's
DISTORT = dict(RANGES, keep=0.0)  # every step distorts (training leaves 10% alone)
CHUNK = 256         # test images per call while finding mistakes: the compiled CPU
                    # forward holds the GIL, so drawings wait at most one chunk


class DrawingError(ValueError):
    """A drawing the network cannot read (blank, all one colour): one line for the page."""


def noun(model):
    """What one of the model's classes is, for the page's words ("draw a digit"): its data
    set's noun, "item" for Fashion-MNIST's "image" (one draws a shoe, not an image), and
    for a checkpoint of no known data set "digit" if its classes are digits, else "item"."""
    from lenet.datasets import DATASETS, DIGITS
    known = DATASETS.get(model.dataset)
    if known is None:
        return "digit" if tuple(model.classes) == DIGITS else "item"
    return "item" if known.noun == "image" else known.noun


def article(word):
    return ("an " if word[:1] in "aeiou" else "a ") + word


def distortion(step):
    """(params (6,) float32, description dict) of distortion `step` (1..MAX_STEP): drawn
    as `lenet train --distort` draws them (kernels/distort.py), from seed `step`, never
    the identity. The description recovers the translation (pixels), scale, squeeze and
    shear from the inverse map's row (a, b, 0, d, e, f) that kernels/distort.py applies:
    a = 1/(sq), b = -k/(sq), d = q/s, (e, f) = -(a tx + b ty, d ty)."""
    row = draw_distortions(np.random.default_rng(step), 1, DISTORT)[0]
    a, b, _, d, e, f = (float(v) for v in row)
    squeeze = (d / a) ** 0.5
    ty = -f / d
    return row, {"shift_x": -(e + b * ty) / a, "shift_y": ty, "scale": 1 / (a * squeeze),
                 "squeeze": squeeze, "shear": -b / a}


class Demo:
    """The model behind the page. model: a LeNet5; load_test: None, or a function that
    returns the test set as a lenet.data.Split (its images, labels, title, classes and
    data set) or raises an exception whose message (one line) says why there is none."""

    def __init__(self, model, load_test=None):
        self.model = model
        # the CPU ops allocate their outputs (no shared scratch): requests run side by
        # side; the GPU's share device workspaces and a stream: one at a time
        self.lock = contextlib.nullcontext() if model.device == "cpu" else threading.Lock()
        self.load_test = load_test
        self.test = None            # the Split, once loaded
        self.note = ""              # why its labels are not the model's classes, if so
        self.mistakes = None        # indices into the test set, surest first
        self.margins = None
        self.predicted = None
        self.labels = None
        self.state = "computing" if load_test else "unavailable"
        self.reason = "" if load_test else "no test set was given"
        self.classes = tuple(model.classes)
        self.noun = noun(model)

    # ------------------------------------------------------------ answers
    def drawing(self, grey, step=0):
        """The answer for a drawing: grey float (H,W), 0 black .. 255 white (or the
        reverse: ink is what differs from the border); step 0 or a distortion."""
        grey = np.asarray(grey, np.float64)
        amount = ink(grey)
        if not amount.any():
            if np.ptp(grey) < MIN_CONTRAST and grey.mean() < 127.5:  # a pad filled with ink
                raise DrawingError(f"the drawing is all one colour: draw {article(self.noun)} "
                                   "on the pad, dark on light or light on dark")
            raise DrawingError("the drawing is blank: no pixel differs enough from the "
                               f"background (draw {article(self.noun)} on the pad)")
        return self._answer(center_digit(amount, layout(self.model.dataset)), step)

    def mistake(self, k, step=0):
        """The answer for the test set's k-th surest mistake (0-based), with its label
        named as its own data set names it (not by the model's classes, which may be
        another data set's)."""
        index = int(self.mistakes[k])
        answer = self._answer(self.test.images[index], step)
        label = int(self.labels[index])
        answer["mistake"] = {"k": k, "count": len(self.mistakes), "index": index,
                             "label": label, "label_name": self.test.classes[label],
                             "predicted": int(self.predicted[index]),
                             "margin": float(self.margins[index])}
        return answer

    def _answer(self, digit, step):
        """Every layer of the uint8 (28,28) digit (distorted if step > 0), as host arrays
        by name, with penalties, class and timing."""
        start = time.perf_counter()
        x = preprocess(digit)
        shown = None
        if step:
            params, shown = distortion(step)
            out = np.empty_like(x)
            distort_cpu(out, x, params[None])
            x = out
        with self.lock:
            model = self.model
            acts = [model.ops.to_host(a) for a in model.forward_all(x)]
        y = acts[-1][0].astype(np.float64)
        k = int(y.argmin())
        return {"layers": {name: a[0] for name, a in zip(LAYERS, acts[:-1], strict=True)},
                "penalties": [float(v) for v in y], "answer": k, "name": self.classes[k],
                "step": step, "distortion": shown,
                "ms": 1000 * (time.perf_counter() - start)}

    # ----------------------------------------------------------- mistakes
    def find_mistakes(self):
        """Load the test set and find every mistake as `lenet show errors` does; on any
        failure keep its one-line reason for the page instead. Test images of another
        data set than the model's get a note (as `lenet eval` gives), for the page."""
        try:
            split = self.load_test()
            images, labels = split.images, np.asarray(split.labels, np.int64)
            other = split.dataset
            if self.model.dataset and other and self.model.dataset != other.name:
                self.note = (f"the model was trained on {self.model.dataset}; these are "
                             f"{other.title}'s images, labelled with {other.title}'s classes")
            y = np.empty((len(labels), 10), self.model.dtype)
            for start in range(0, len(labels), CHUNK):  # drawings run between chunks
                with self.lock:
                    y[start:start + CHUNK] = penalties(self.model,
                                                       preprocess(images[start:start + CHUNK]))
            self.mistakes, self.margins = surest_mistakes(labels, y, len(labels))
            self.predicted = y.argmin(axis=1)
            self.labels = labels
            self.test = split
            self._answer(images[0], 1)  # loads the compiled distortion before a page asks
            self.state = "ready"
        except Exception as e:  # noqa: BLE001 - the page shows why; drawing still works
            self.reason = " ".join(str(e).split()) or type(e).__name__
            self.state = "unavailable"

    def info(self):
        """What the page needs before its first request."""
        from lenet.datasets import DATASETS
        known = DATASETS.get(self.model.dataset)
        info = {"classes": list(self.classes), "dataset": known.title if known else None,
                "noun": self.noun, "test_note": self.note,
                "bitmaps": RBF_CENTERS.tolist(),
                "device": self.model.device, "mistakes": self.state, "reason": self.reason,
                "max_step": MAX_STEP}
        if self.state == "ready":
            info["mistake_count"] = len(self.mistakes)
            info["test_count"] = len(self.labels)
            info["test_title"] = self.test.title
        return info
