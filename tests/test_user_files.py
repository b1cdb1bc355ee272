"""The user's files: `lenet.train.train`'s log is replaced only once the first pass has
completed, a file that is not a checkpoint or a log is never overwritten, nonsensical
settings and empty sets are refused, and evaluation shows progress (small random data, on
the CPU). Image files as people make them: tests/test_images.py."""

import json
import os

import numpy as np
import pytest

from lenet import LeNet5
from lenet.logs import check_outputs
from lenet.train import Trainer, error_rate, penalties, train


def random_set(n, seed):
    r = np.random.default_rng(seed)
    return (r.uniform(-0.1, 1.175, (n, 1, 32, 32)).astype(np.float32),
            r.integers(0, 10, n))


TRAIN, TEST = random_set(24, 0), random_set(10, 1)


def run(tmp_path, epochs=1, **options):
    return train(LeNet5(seed=options.pop("seed", 0)), TRAIN, TEST, epochs=epochs,
                 batch_size=8, progress=False, checkpoint=tmp_path / "m.npz",
                 log=tmp_path / "m.log.jsonl", out=lambda line: None, **options)


def test_log_and_checkpoint_change_only_when_a_pass_completes(tmp_path, monkeypatch):
    run(tmp_path, epochs=2)
    checkpoint, log = (tmp_path / "m.npz").read_bytes(), (tmp_path / "m.log.jsonl").read_text()
    assert [json.loads(line)["pass"] for line in log.splitlines()] == [1, 2]

    def interrupted(self, progress=None):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # Ctrl-C during the first pass of a new run
        m.setattr(Trainer, "train_pass", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path, seed=1)
    assert (tmp_path / "m.npz").read_bytes() == checkpoint
    assert (tmp_path / "m.log.jsonl").read_text() == log
    records = run(tmp_path, epochs=1, seed=1)  # a completed pass replaces both
    lines = [json.loads(line) for line in (tmp_path / "m.log.jsonl").read_text().splitlines()]
    assert lines == [json.loads(json.dumps(r)) for r in records]
    assert (tmp_path / "m.npz").read_bytes() != checkpoint
    assert sorted(os.listdir(tmp_path)) == ["m.log.jsonl", "m.npz"]


def test_files_that_are_not_ours_are_never_overwritten(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    model_file = tmp_path / "m.npz"
    LeNet5(seed=0).save(model_file)
    cases = [(notes, None, "notes.txt exists and is not a LeNet-5 checkpoint"),
             (tmp_path / "x.npz", notes, "notes.txt exists and is not a training log"),
             (model_file, model_file, "the log and the checkpoint are the same file"),
             (tmp_path, None, "is a directory")]
    for checkpoint, log, message in cases:
        with pytest.raises(ValueError, match=message):
            check_outputs(checkpoint, log)
        with pytest.raises(ValueError, match=message):
            train(LeNet5(seed=0), TRAIN, TEST, epochs=1, checkpoint=checkpoint, log=log,
                  progress=False, out=lambda line: None)
    assert notes.read_text() == "my notes\n"
    assert sorted(os.listdir(tmp_path)) == ["m.npz", "notes.txt"]
    empty = tmp_path / "empty.log.jsonl"
    empty.write_text("")
    check_outputs(model_file, empty)  # a checkpoint and an empty log may be replaced


@pytest.mark.parametrize("options, message", [
    ({"lr": -0.1}, "lr must be a positive number"),
    ({"lr": float("nan")}, "lr must be a positive number"),
    ({"momentum": 1.0}, "momentum must lie in"),
    ({"recipe": "sdlm-batch", "mu": float("inf")}, "mu must be a positive number"),
    ({"recipe": "paper", "mu": -1.0}, "mu must be a positive number"),
    ({"epochs": 0}, "epochs must be a whole number"),
    ({"epochs": 1.5}, "epochs must be a whole number"),
    ({"batch_size": 0}, "batch size must be at least 1"),
])
def test_nonsensical_settings_are_refused(options, message):
    recipe = options.pop("recipe", "sgd")
    options.setdefault("batch_size", 1 if recipe == "paper" else 8)
    with pytest.raises(ValueError, match=message):
        train(LeNet5(seed=0), TRAIN, TEST, recipe=recipe, progress=False,
              out=lambda line: None, **{"epochs": 1, **options})


def test_empty_sets_are_refused():
    empty = (np.zeros((0, 1, 32, 32), np.float32), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="the training set is empty"):
        train(LeNet5(seed=0), empty, TEST, epochs=1, progress=False, out=lambda line: None)
    with pytest.raises(ValueError, match="the test set is empty"):
        train(LeNet5(seed=0), TRAIN, empty, epochs=1, progress=False, out=lambda line: None)
    with pytest.raises(ValueError, match="the set is empty"):
        error_rate(LeNet5(seed=0), *empty)


def test_evaluation_in_chunks_is_forward_and_shows_progress(capsys):
    model = LeNet5(seed=3)
    x, labels = TRAIN
    model.max_batch = 5  # chunks of forward's own size: the same figures, bit for bit
    whole = model.forward(x)
    np.testing.assert_array_equal(penalties(model, x), whole)
    assert error_rate(model, x, labels) == np.mean(whole.argmin(axis=1) != labels)
    train(model, TRAIN, TEST, epochs=1, batch_size=8, out=lambda line: None)
    err = capsys.readouterr().err
    for bar in ("pass 1/1: 100%", "training error: 100%", "test error: 100%", "24/24", "10/10"):
        assert bar in err, (bar, err)
