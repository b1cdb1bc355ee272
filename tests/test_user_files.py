"""The user's files: `lenet.train.train`'s log is replaced only once the first pass has
completed, a file that is not a checkpoint or a log is never overwritten, nonsensical
settings and empty sets are refused, and evaluation shows progress (small random data, on
the CPU). Image files as people make them: tests/test_images.py."""

import json
import os
import warnings

import numpy as np
import pytest

from lenet import LeNet5
from lenet.logs import check_outputs
from lenet.train import RecipeInitWarning, Trainer, error_rate, penalties, train


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


def test_ctrl_c_while_a_pass_is_saved_leaves_checkpoint_and_log_together(tmp_path,
                                                                          monkeypatch):
    import signal

    from lenet.checkpoint import read_checkpoint
    save, saves = LeNet5.save, []

    def interrupted_save(model, path):   # Ctrl-C between a checkpoint and its log line
        save(model, path)
        saves.append(path)
        if len(saves) == interrupt_at:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(LeNet5, "save", interrupted_save)
    # Python's own handler, whatever the test was started with (SIGINT ignored)
    kept = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:   # in a first pass (the log replaced), then in a later one (appended to)
        for epochs, interrupt_at in ((1, 1), (3, 2)):
            saves.clear()
            with pytest.raises(KeyboardInterrupt):
                run(tmp_path, epochs=epochs)
            passes = read_checkpoint(tmp_path / "m.npz")[1]["provenance"]["passes"]
            lines = (tmp_path / "m.log.jsonl").read_text().splitlines()
            assert [json.loads(line)["pass"] for line in lines] == list(range(1, passes + 1))
            assert passes == interrupt_at
    finally:
        signal.signal(signal.SIGINT, kept)


def test_files_that_are_not_ours_are_never_overwritten(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    model_file = tmp_path / "m.npz"
    LeNet5(seed=0).save(model_file)
    passwords = tmp_path / "credentials.json"   # JSON lines, one with a "pass", no log
    passwords.write_text('{"user": "alice", "pass": "hunter2"}\n')
    cases = [(notes, None, "notes.txt exists and is not a LeNet-5 checkpoint"),
             (tmp_path / "x.npz", notes, "notes.txt exists and is not a training log"),
             (tmp_path / "x.npz", passwords, "credentials.json exists and is not a training"),
             (model_file, model_file, "the log and the checkpoint are the same file"),
             (tmp_path, None, "is a directory"),
             # refused before a pass, not after it with the checkpoint written
             (tmp_path / "x.npz", notes / "m.log.jsonl", f"cannot write {notes / 'm.log.jsonl'}"
              f": {notes} is a file, not a directory"),
             (notes / "m.npz", None, f"{notes} is a file, not a directory"),
             (tmp_path / "link.npz", None, "link.npz exists and is not a LeNet-5 checkpoint")]
    (tmp_path / "link.npz").symlink_to(tmp_path / "nowhere.npz")   # a link to nothing
    for checkpoint, log, message in cases:
        with pytest.raises(ValueError, match=message):
            check_outputs(checkpoint, log)
        with pytest.raises(ValueError, match=message):
            train(LeNet5(seed=0), TRAIN, TEST, epochs=1, checkpoint=checkpoint, log=log,
                  progress=False, out=lambda line: None)
    assert notes.read_text() == "my notes\n"
    assert passwords.read_text() == '{"user": "alice", "pass": "hunter2"}\n'
    assert sorted(os.listdir(tmp_path)) == ["credentials.json", "link.npz", "m.npz",
                                            "notes.txt"]
    empty = tmp_path / "empty.log.jsonl"
    empty.write_text("")
    check_outputs(model_file, empty)  # a checkpoint and an empty log may be replaced


def test_training_never_writes_over_the_shipped_weights(tmp_path, monkeypatch):
    import shutil

    import lenet.model
    shipped = tmp_path / "lenet5-mnist.npz"   # a copy stands for the package's file
    shutil.copy(lenet.model.PRETRAINED, shipped)
    monkeypatch.setattr(lenet.model, "PRETRAINED", str(shipped))
    before = shipped.read_bytes()
    with pytest.raises(ValueError, match="is the trained weights shipped with the package; "
                       "refusing to overwrite them"):
        train(LeNet5(seed=0), TRAIN, TEST, epochs=1, checkpoint=shipped, progress=False,
              out=lambda line: None)
    assert shipped.read_bytes() == before and os.listdir(tmp_path) == [shipped.name]


@pytest.mark.parametrize("options, message", [
    ({"lr": -0.1}, "lr must be a positive number"),
    ({"lr": float("nan")}, "lr must be a positive number"),
    ({"momentum": 1.0}, "momentum must lie in"),
    ({"recipe": "sdlm-batch", "mu": float("inf")}, "mu must be a positive number"),
    ({"recipe": "paper", "mu": -1.0}, "mu must be a positive number"),
    ({"recipe": "sdlm-batch", "mu": 10 ** 400}, "mu must be a positive number"),
    ({"momentum": 10 ** 400}, "momentum must lie in"),
    ({"epochs": 0}, "epochs must be a whole number"),
    ({"epochs": 1.5}, "epochs must be a whole number"),
    ({"batch_size": 0}, "batch size must be a whole number of at least 1, not 0"),
    ({"batch_size": 1.5}, "batch size must be a whole number of at least 1, not 1.5"),
])
def test_nonsensical_settings_are_refused(options, message):
    recipe = options.pop("recipe", "sgd")
    options.setdefault("batch_size", 1 if recipe == "paper" else 8)
    with pytest.raises(ValueError, match=message):
        train(LeNet5(seed=0), TRAIN, TEST, recipe=recipe, progress=False,
              out=lambda line: None, **{"epochs": 1, **options})


@pytest.mark.parametrize("name, recipe", [("lr", "sgd"), ("momentum", "sgd"),
                                          ("mu", "sdlm-batch")])
def test_a_setting_that_is_not_a_number_is_refused_by_name(name, recipe):
    with pytest.raises(TypeError, match=f"^{name} must be a number, not str$"):
        train(LeNet5(seed=0), TRAIN, TEST, recipe=recipe, batch_size=8, progress=False,
              out=lambda line: None, epochs=1, **{name: "0.01"})


@pytest.mark.parametrize("name", ["shuffle", "distort"])
def test_a_switch_that_is_not_true_or_false_is_refused(name):
    with pytest.raises(TypeError, match=f"^{name} must be True or False, not 'no'$"):
        Trainer(LeNet5(seed=0), *TRAIN, recipe="sgd", **{name: "no"})


def test_a_step_takes_only_a_batch_of_its_pass():
    t = Trainer(LeNet5(seed=0), *TRAIN, recipe="sgd", batch_size=4)
    with pytest.raises(ValueError, match="step: begin_pass first"):
        t.step(np.arange(24, dtype=np.int32), 0, 4)
    _, order, _ = t.begin_pass()
    for start, count, what in ((0, 5, "not a batch of at most 4"), (21, 4, "21..25"),
                               (-1, 2, "-1..1"), (0, 0, "0..0")):
        with pytest.raises(ValueError, match=what):
            t.step(order, start, count)
    with pytest.raises(ValueError, match="order must be the one begin_pass returned"):
        t.step(order.copy(), 0, 4)
    t.step(order, 20, 4)


def test_numpy_numbers_as_settings_are_written_as_plain_ones(tmp_path):
    # once a TypeError when the first pass's log line or checkpoint was written
    train(LeNet5(seed=0), TRAIN, TEST, recipe="sgd", batch_size=8, epochs=1, progress=False,
          seed=np.int64(1), lr=np.float32(0.5), momentum=np.float64(0.5), shuffle=np.True_,
          checkpoint=tmp_path / "m.npz", log=tmp_path / "m.log.jsonl", out=lambda line: None)
    assert json.loads((tmp_path / "m.log.jsonl").read_text())["pass"] == 1
    provenance = LeNet5.load(tmp_path / "m.npz").provenance
    assert (provenance["seed"], provenance["lr"], provenance["momentum"]) == (1, 0.5, 0.5)
    t = Trainer(LeNet5(seed=0, init="lush"), *TRAIN, recipe="lecun", mu=np.float32(2.0),
                loss="map", j=np.float32(3.0), distort=np.True_)
    json.dumps(t.provenance())   # plain numbers and booleans throughout
    assert type(t.mu) is float and type(t.j) is float and t.distort is True


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


# ------------------------------------------------------- what a user review found

def test_labels_of_another_shape_are_refused_not_broadcast():
    model = LeNet5(seed=0)
    x, labels = TEST
    for bad, error, message in ((labels[:, None], ValueError, r"labels must have shape \(10,\)"),
                                (labels[:1], ValueError, r"labels must have shape \(10,\)"),
                                (labels.astype(str), TypeError, "labels must be integers")):
        with pytest.raises(error, match=message):
            error_rate(model, x, bad)
    assert error_rate(model, x, list(labels)) == np.mean(model.predict(x) != labels)


def test_every_set_is_checked_before_the_first_pass(tmp_path, monkeypatch):
    def no_pass(self, progress=None):
        raise AssertionError("a pass ran before the sets were checked")

    monkeypatch.setattr(Trainer, "train_pass", no_pass)
    x, labels = TEST
    unit = x.copy()
    unit[7] = (unit[7] + 0.1) / 1.275    # pixels 0..1, not the paper's encoding
    for test_set, validation_set, error, message in (
            ((x, labels[:, None]), None, ValueError, "the test set: labels must have shape"),
            ((unit, labels), None, ValueError, "the test set: image 7 is not in the paper's "
             "input encoding .*, none near the background"),
            (((x * 255).astype(np.uint8), labels), None, TypeError,
             "the test set: images must be floating point"),
            (None, (x[:, :, :4], labels), ValueError, "the validation set: images must have")):
        with pytest.raises(error, match=message):
            train(LeNet5(seed=0), TRAIN, test_set, validation_set=validation_set, epochs=1,
                  batch_size=8, progress=False, checkpoint=tmp_path / "m.npz",
                  out=lambda line: None)
    with pytest.raises(ValueError, match="^image 0 is not in the paper's input encoding"):
        train(LeNet5(seed=0), (TRAIN[0] * 255, TRAIN[1]), TEST, epochs=1, batch_size=8,
              progress=False, checkpoint=tmp_path / "m.npz", out=lambda line: None)
    assert os.listdir(tmp_path) == []


def test_a_diverging_run_stops_and_keeps_the_last_finite_checkpoint(tmp_path, monkeypatch):
    from lenet.train import Diverged
    with pytest.raises(Diverged, match="pass 1 diverged: loss nan.*try a smaller lr; no "
                                       "checkpoint was written"):
        run(tmp_path, epochs=2, lr=1e35)
    assert os.listdir(tmp_path) == []
    real = Trainer.train_pass

    def second_pass_blows_up(self, progress=None):
        result = real(self, progress)
        if self.pass_index == 2:
            self.model.flat_params[:5] = np.inf
        return result

    monkeypatch.setattr(Trainer, "train_pass", second_pass_blows_up)
    with pytest.raises(Diverged, match=r"pass 2 diverged: loss [-\d.e]+, parameters no longer "
                                       r"all finite; try a smaller lr; .*m.npz keeps pass 1"):
        run(tmp_path, epochs=3)
    kept = LeNet5.load(tmp_path / "m.npz")   # loads: the first pass's parameters
    assert all(np.isfinite(p).all() for p in kept.parameters().values())
    assert len((tmp_path / "m.log.jsonl").read_text().splitlines()) == 1


def test_a_sweep_stops_saving_a_run_that_diverges(tmp_path, monkeypatch):
    from lenet import sweep as sweep_module
    real = sweep_module._SideBySide.train_pass

    def run_b_blows_up(self, bar):
        results = real(self, bar)
        if self.trainers[0].pass_index == 2:
            results[1] = (float("nan"), results[1][1])
        return results

    monkeypatch.setattr(sweep_module._SideBySide, "train_pass", run_b_blows_up)
    lines = []
    records = sweep_module.sweep([{"name": "a", "seed": 0}, {"name": "b", "seed": 1}],
                                 TRAIN, TEST, epochs=3, device="cpu", out_dir=tmp_path,
                                 progress=False, out=lines.append)
    assert [len(records[k]) for k in "ab"] == [3, 1]
    assert "b: pass 2 diverged: loss nan" in "\n".join(lines)
    assert "its files keep pass 1" in "\n".join(lines)
    for name, passes in (("a", 3), ("b", 1)):
        log = (tmp_path / f"{name}.log.jsonl").read_text().splitlines()
        assert [json.loads(line)["pass"] for line in log] == list(range(1, passes + 1))
        LeNet5.load(tmp_path / f"{name}.npz")


def test_save_refuses_what_it_should_not_write(tmp_path):
    model = LeNet5(seed=0)
    notes = tmp_path / "notes.npz"
    notes.write_bytes(b"not a checkpoint")
    with pytest.raises(FileExistsError, match="notes.npz exists and is not a LeNet-5 checkpoint"):
        model.save(notes)
    assert notes.read_bytes() == b"not a checkpoint"
    with pytest.raises(IsADirectoryError, match="is a directory; give a file name"):
        model.save(tmp_path)
    with pytest.raises(FileNotFoundError, match="directory .*missing does not exist"):
        model.save(tmp_path / "missing" / "m.npz")
    model.flat_params[7] = np.nan
    with pytest.raises(ValueError, match="C1.weight contains NaN or infinite values"):
        model.save(tmp_path / "m.npz")
    assert sorted(os.listdir(tmp_path)) == ["notes.npz"]


@pytest.mark.parametrize("attribute, value, message", [
    ("classes", ("a", "b"), r"class names \['a', 'b'\] are not ten strings"),
    ("dataset", 5, "data set 5 is not a name"),
    ("provenance", "by hand", "provenance 'by hand' is not a JSON object"),
    ("provenance", {"error": np.float32(0.5)}, "the provenance cannot be written as JSON"),
])
def test_save_refuses_a_description_load_would_refuse_and_keeps_the_good_file(
        tmp_path, attribute, value, message):
    good = tmp_path / "good.npz"
    model = LeNet5(seed=0)
    model.save(good)
    before = good.read_bytes()
    setattr(model, attribute, value)
    with pytest.raises(ValueError, match=message):
        model.save(good)
    assert good.read_bytes() == before and LeNet5.load(good).provenance == {"init": "fan-in",
                                                                            "seed": 0}
    assert sorted(os.listdir(tmp_path)) == ["good.npz"]


def test_a_checkpoint_in_a_missing_directory_is_refused_before_training(tmp_path, monkeypatch):
    def trained(self, progress=None):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(Trainer, "train_pass", trained)
    with pytest.raises(ValueError, match="cannot write .*c.npz: directory .*sub does not exist"):
        run_to = tmp_path / "new" / "sub" / "c.npz"
        train(LeNet5(seed=0), TRAIN, TEST, epochs=1, progress=False, checkpoint=run_to,
              out=lambda line: None)
    assert os.listdir(tmp_path) == []


def test_a_missing_checkpoint_directory_is_refused_unless_the_caller_makes_it(tmp_path, capsys):
    from conftest import lenet_cli
    missing = tmp_path / "new" / "m.npz"
    with pytest.raises(ValueError, match="cannot write .*m.npz: directory .*new does not exist"):
        check_outputs(missing, None)
    check_outputs(missing, tmp_path / "new" / "m.log.jsonl", made=True)   # a sweep's folder
    status, _, err = lenet_cli(["train", "--out", missing, "--epochs", "1"], capsys)
    assert status == 2 and "directory" in err and "new does not exist" in err
    assert os.listdir(tmp_path) == []


def test_a_new_model_of_another_init_than_its_recipe_is_warned_of():
    for make in (lambda: Trainer(LeNet5(seed=0), *TRAIN, recipe="lecun"),
                 lambda: train(LeNet5(seed=0), TRAIN, TEST, recipe="lecun", epochs=1,
                               progress=False, out=lambda line: None)):
        with pytest.warns(RecipeInitWarning, match="lecun recipe starts from init 'lush', "
                          "this model from 'fan-in'") as caught:
            make()
        assert [w.filename for w in caught] == [__file__]    # the user's line, not lenet's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(LeNet5(seed=0, init="lush"), *TRAIN, recipe="lecun")
        Trainer(LeNet5(seed=0), *TRAIN, recipe="sgd")
        trained = LeNet5.pretrained(device="cpu")      # not a new model: its own start
        Trainer(trained, *TRAIN, recipe="lecun")


def test_load_keeps_a_float64_checkpoint_on_the_cpu_whatever_the_device_is_called(tmp_path):
    LeNet5(seed=0, dtype=np.float64).save(tmp_path / "m.npz")
    for device in ("cpu", "auto"):     # auto: the CPU for float64, with a GPU or without
        model = LeNet5.load(tmp_path / "m.npz", device=device)
        assert (model.device, model.dtype) == ("cpu", np.float64)


def test_training_records_its_provenance_and_new_parameters_clear_it(tmp_path):
    model = LeNet5.pretrained(device="cpu")
    shipped = model.provenance
    assert shipped["test_error"] > 0
    model.save(tmp_path / "copy.npz")              # a copy keeps it
    assert LeNet5.load(tmp_path / "copy.npz").provenance == shipped
    records = train(model, TRAIN, TEST, recipe="sgd", epochs=2, batch_size=8, lr=0.01,
                    progress=False, out=lambda line: None)
    made = model.provenance
    assert made["start"] == shipped                # fine-tuned from the shipped weights
    assert (made["recipe"], made["lr"], made["batch_size"], made["passes"],
            made["patterns"]) == ("sgd", 0.01, 8, 2, len(TRAIN[1]))
    assert made["test_error"] == records[-1]["test_error"] != shipped["test_error"]
    model.save(tmp_path / "tuned.npz")
    assert LeNet5.load(tmp_path / "tuned.npz").provenance == json.loads(json.dumps(made))
    assert LeNet5(seed=4, init="lush").provenance == {"init": "lush", "seed": 4}
    other = LeNet5.pretrained(device="cpu")
    other.set_parameters(LeNet5(seed=1).parameters())
    assert other.provenance is None


@pytest.mark.parametrize("make, message", [
    (lambda: LeNet5(seed=0).gradients(*TEST, loss="map", j=float("nan")), "j, MAP's constant"),
    (lambda: LeNet5(seed=0).gradients(*TEST, loss="map", j=-1.0), "j, MAP's constant"),
    (lambda: LeNet5(seed=0).gradients(*TEST, loss="map", j=10 ** 400), "j, MAP's constant"),
    (lambda: Trainer(LeNet5(seed=0, init="lush"), *TRAIN, recipe="lecun", lr=0.1),
     "lr is sgd's step size"),
    (lambda: Trainer(LeNet5(seed=0, init="lush"), *TRAIN, recipe="lecun", momentum=0.5),
     "momentum is sgd's; the lecun recipe takes none"),
    (lambda: Trainer(LeNet5(seed=0), *TRAIN, recipe="sgd", mu=0.01),
     "mu belongs to the SDLM recipes"),
    (lambda: Trainer(LeNet5(seed=0), *TRAIN, recipe="sgd", schedule="no-such-schedule"),
     "schedule and hessian_sample belong to the SDLM recipes, not sgd"),
    (lambda: Trainer(LeNet5(seed=0), *TRAIN, recipe="sgd", hessian_sample="consecutive"),
     "schedule and hessian_sample belong to the SDLM recipes, not sgd"),
    (lambda: Trainer(LeNet5(seed=0), *TRAIN, recipe="sdlm-batch").estimate_hessian([0, 24]),
     r"index must hold 1 or more whole numbers in 0..23 \(training patterns\)"),
    (lambda: Trainer(LeNet5(seed=0), *TRAIN, recipe="sdlm-batch").estimate_hessian([]),
     "index must hold 1 or more"),
    (lambda: LeNet5(seed=-1), "seed must be a whole number of at least 0"),
    (lambda: Trainer(LeNet5(seed=0), *TRAIN, seed=-3), "seed must be a whole number"),
])
def test_api_arguments_that_would_be_ignored_or_crash_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_empty_batches_and_their_out_buffers():
    model = LeNet5(seed=0)
    assert model.predict([]).shape == (0,)
    assert model.forward([]).shape == (0, 10)
    x = TEST[0]
    out = np.zeros((0, 10), np.float32)
    assert model.forward(x[:0], out=out) is out
    with pytest.raises(ValueError, match=r"out is float32 \(5, 10\); the result is float32 "
                                         r"\(0, 10\)"):
        model.forward(x[:0], out=np.zeros((5, 10), np.float32))


def test_a_batch_larger_than_the_training_set_takes_a_workspace_of_its_size():
    trainer = Trainer(LeNet5(seed=0), *TRAIN, recipe="sgd", batch_size=10 ** 9)
    assert trainer.workspace.batch == len(TRAIN[1]) == trainer.batch_size
    loss, _ = trainer.train_pass()
    assert np.isfinite(loss)
    # sdlm-batch's step is that of the batch each update averages (and its log's)
    n = len(TRAIN[1])
    big = Trainer(LeNet5(seed=0), *TRAIN, recipe="sdlm-batch", batch_size=10 ** 9)
    whole = Trainer(LeNet5(seed=0), *TRAIN, recipe="sdlm-batch", batch_size=n)
    assert big.batch_size == n and big.step_size() == whole.step_size()
    assert big.provenance()["batch_size"] == n


def test_unwritable_outputs_are_refused_before_training(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(ro)
                        and mode == os.W_OK else real(path, mode))   # as on a read-only mount
    for checkpoint, log in ((ro / "m.npz", None), (tmp_path / "m.npz", ro / "sub" / "m.log")):
        with pytest.raises(ValueError, match=f"cannot write .*: {ro} is not writable"):
            check_outputs(checkpoint, log)


def test_the_command_line_makes_one_line_of_what_the_machine_refuses(monkeypatch, capsys):
    import errno

    from lenet import cli
    from lenet.commands import evaluate

    def refused(args):
        raise OSError(errno.EROFS, "Read-only file system", "/data/out.npz")

    monkeypatch.setattr(evaluate, "run", refused)
    assert cli.main(["eval"]) == 1
    assert capsys.readouterr().err == "lenet eval: error: Read-only file system: /data/out.npz\n"


def test_train_options_that_would_be_ignored_are_refused_and_help_names_defaults(capsys):
    from lenet import cli
    assert cli.main(["train", "--validation", "100", "--test-size", "50"]) == 2
    assert "--test-size has no effect with --validation" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: map for lecun, mse for the other recipes" in text
    assert "default: lush for lecun, fan-in for the other recipes" in text
    assert "(the default); map" not in text


def test_ctrl_c_where_a_command_says_nothing_of_its_own_is_one_line(monkeypatch, capsys):
    # e.g. during a download: Python's traceback of KeyboardInterrupt ran to 50 lines
    from lenet import cli
    from lenet.commands import evaluate

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "run", interrupted)
    assert cli.main(["eval"]) == 130
    assert capsys.readouterr().err == "\nlenet eval: interrupted\n"
