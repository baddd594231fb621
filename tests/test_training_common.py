"""The shared training loop: resumable, and a resumed run equals an uninterrupted one; weight
averaging (trainer.WeightAverage) keeps the mean of the steps and ships it."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import needs_torch


@needs_torch
@pytest.mark.parametrize("average_from", [None, 2])
def test_resumed_training_equals_uninterrupted(tmp_path, tiny_config, average_from):
    import torch

    from training.trainer import TrainConfig, train
    from xai_platform.models.formats.torch import build_network

    spec = tiny_config.model("tiny-torch-xray")
    rng = np.random.default_rng(0)
    x = rng.random((96, 32, 32), dtype=np.float32)
    y = rng.integers(0, 2, 96)
    x[y == 1, 8:16, 8:16] += 0.5

    def run(epochs_first: int, checkpoint):
        net = build_network(spec, seed=0)
        config = TrainConfig(epochs=3, batch_size=16, lr=3e-3, seed=1, threads=1,
                             average_from=average_from)
        if epochs_first < 3:  # interrupted after `epochs_first` epochs, then resumed
            train(spec, net, x[:64], y[:64], x[64:], y[64:],
                  TrainConfig(**{**config.__dict__, "time_limit_s": 1e-9}), checkpoint=checkpoint)
            net = build_network(spec, seed=0)
        history = train(spec, net, x[:64], y[:64], x[64:], y[64:], config, checkpoint=checkpoint)
        return net.state_dict(), history

    straight, h1 = run(3, tmp_path / "a.pt")
    resumed, h2 = run(1, tmp_path / "b.pt")
    assert [e["epoch"] for e in h2["epochs"]] == [1, 2, 3]
    assert h1["epochs"] == h2["epochs"]
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


@needs_torch
def test_weight_average_is_the_mean_of_the_states_it_was_given():
    import torch

    from training.trainer import WeightAverage

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    states = []
    average = WeightAverage()
    for i in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.normal_()
        net.train()
        net(torch.randn(4, 3))  # moves the running statistics and counts the batch
        states.append({k: v.clone() for k, v in net.state_dict().items()})
        average.add(net)
    mean = average.snapshot()
    for key, value in mean.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, torch.stack([s[key] for s in states]).mean(0))
        else:  # the batch count is the latest, not a mean
            assert torch.equal(value, states[-1][key]), key
    mean["0.weight"].zero_()  # a snapshot is a copy
    assert not torch.equal(average.state["0.weight"], mean["0.weight"])


@needs_torch
def test_weight_averaging_ships_the_averaged_network_at_its_best_epoch(tiny_config):
    from training.trainer import TrainConfig, _val_metric, train
    from xai_platform.models.formats.torch import TorchHandle, build_network

    spec = tiny_config.model("tiny-torch-xray")
    rng = np.random.default_rng(0)
    x = rng.random((96, 32, 32), dtype=np.float32)
    y = rng.integers(0, 2, 96)
    x[y == 1, 8:16, 8:16] += 0.3
    net = build_network(spec, seed=0)
    history = train(spec, net, x[:64], y[:64], x[64:], y[64:],
                    TrainConfig(epochs=3, batch_size=16, lr=3e-3, seed=1, threads=1,
                                average_from=2))
    rows = history["epochs"]
    assert "val_averaged" not in rows[0] and all("val_averaged" in r for r in rows[1:])
    assert history["best_metric"] == max(r["val_averaged"] for r in rows[1:])
    shipped = _val_metric(spec, TorchHandle(spec, net, device="cpu", untrained=False)
                          .scores(x[64:], batch_size=64), y[64:])
    assert shipped == pytest.approx(history["best_metric"], abs=1e-9)
    for bad in (0, 4):
        with pytest.raises(ValueError, match="average_from"):
            train(spec, build_network(spec, seed=0), x[:64], y[:64], x[64:], y[64:],
                  TrainConfig(epochs=3, average_from=bad))


def test_metrics_on_known_answers():
    from training.calibration import fit_temperature
    from training.metrics import equal_error_rate, rates_at, roc_auc

    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    assert roc_auc(scores, labels) == pytest.approx(15 / 16)
    eer, _ = equal_error_rate(scores, labels)
    assert eer == pytest.approx(0.25)
    assert rates_at(scores, labels, 0.5) == {"false_alarm_rate": 0.25, "miss_rate": 0.25,
                                             "accuracy": 0.75}
    # Over-confident logits get a temperature above 1.
    z = np.random.default_rng(0).normal(size=2000)
    y = (np.random.default_rng(1).random(2000) < 1 / (1 + np.exp(-z))).astype(int)
    assert fit_temperature(4 * z, y) == pytest.approx(4.0, rel=0.15)
