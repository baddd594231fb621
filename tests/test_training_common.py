"""The shared training loop: resumable, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import needs_torch


@needs_torch
def test_resumed_training_equals_uninterrupted(tmp_path, tiny_config):
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
        config = TrainConfig(epochs=3, batch_size=16, lr=3e-3, seed=1, threads=1)
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
