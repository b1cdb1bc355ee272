"""Training on the CPU: the recipes lower the loss, learn MNIST digits, and are
reproducible; the SDLM step is the paper's formula."""

import json

import numpy as np
import pytest

from lenet import LeNet5
from lenet.train import SDLM_MU, Trainer, error_rate, paper_eta, train


@pytest.fixture(scope="module")
def small_mnist(mnist_dir):
    from lenet.data import load_mnist, preprocess
    images, labels = load_mnist("train", mnist_dir)
    x, y = preprocess(images[:4000]), labels[:4000].astype(np.int64)
    test_images, test_labels = load_mnist("test", mnist_dir)
    return (x[:3000], y[:3000]), (preprocess(test_images[:1000]),
                                   test_labels[:1000].astype(np.int64))


def test_paper_schedule():
    assert [paper_eta(p) for p in range(20)] == \
        [5e-4] * 2 + [2e-4] * 3 + [1e-4] * 3 + [5e-5] * 4 + [1e-5] * 8


def test_sgd_learns_digits(small_mnist, tmp_path):
    train_set, test_set = small_mnist
    model = LeNet5(seed=0)
    before = error_rate(model, *test_set)
    log = tmp_path / "log.jsonl"
    records = train(model, train_set, test_set, recipe="sgd", epochs=6, progress=False,
                    checkpoint=tmp_path / "m.npz", log=log, out=lambda s: None)
    losses = [r["train_loss"] for r in records]
    assert losses[-1] < losses[0] < 84  # 84 = penalty of an untrained net's zero output
    assert before > 0.8
    assert records[-1]["test_error"] < 0.10, records  # beats 90% accuracy on held-out digits
    lines = [json.loads(s) for s in log.read_text().splitlines()]
    assert [r["pass"] for r in lines] == [1, 2, 3, 4, 5, 6]
    back = LeNet5.load(tmp_path / "m.npz")
    assert error_rate(back, *test_set) == records[-1]["test_error"]


def test_training_is_reproducible(small_mnist):
    (x, y), _ = small_mnist
    results = []
    for _ in range(2):
        model = LeNet5(seed=7)
        Trainer(model, x[:256], y[:256], recipe="sgd", batch_size=8, seed=3).train_pass()
        results.append(model.parameters())
    for k in results[0]:
        np.testing.assert_array_equal(results[0][k], results[1][k])


def test_sdlm_step_is_eta_over_mu_plus_h(small_mnist):
    # one per-pattern step of the paper's recipe, recomputed by hand
    (x, y), _ = small_mnist
    model = LeNet5(seed=1, dtype=np.float64)
    trainer = Trainer(model, x[:600], y[:600], recipe="paper", seed=0)
    trainer.estimate_hessian()
    hess = {k: model.ops.to_host(v) for k, v in trainer.hessian.items()}
    before = model.parameters()
    first = np.random.default_rng(0)  # the trainer's generator, replayed
    chosen = first.choice(600, 500, replace=False)
    expected_h = model.second_derivatives(x[chosen], y[chosen])
    for k in hess:
        np.testing.assert_allclose(hess[k], expected_h[k], rtol=1e-12)
    _, grads = model.gradients(x[:1], y[:1])
    # apply exactly one pattern through the trainer's update
    for name, g in grads.items():
        model.ops.sdlm_update(model._params[name], model.ops.asarray(g), trainer.hessian[name],
                              paper_eta(0), SDLM_MU)
    after = model.parameters()
    for k in before:
        np.testing.assert_allclose(after[k], before[k] - 5e-4 / (0.02 + hess[k]) * grads[k],
                                   rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("recipe", ["paper", "sdlm-batch"])
def test_sdlm_recipes_run_and_lower_the_loss(small_mnist, recipe):
    (x, y), _ = small_mnist
    model = LeNet5(seed=2)
    trainer = Trainer(model, x[:1000], y[:1000], recipe=recipe, seed=0)
    losses = [trainer.train_pass()[0] for _ in range(2)]
    assert all(np.isfinite(v).all() for v in model.parameters().values())
    if recipe == "sdlm-batch":  # the paper's literal step sizes do not train here
        assert losses[1] < losses[0] < 84


def test_paper_recipe_refuses_batches(small_mnist):
    (x, y), _ = small_mnist
    with pytest.raises(ValueError, match="sdlm-batch"):
        Trainer(LeNet5(), x[:10], y[:10], recipe="paper", batch_size=8)
