"""Explanation-quality metrics with known answers, the scorecard and the batch report.

The region model (tests/region_models.py) depends on one square only, so the region mask is a
perfect attribution and a random map is chance.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_MODELS, chest_like, needs_torch, write_config
from region_models import SIZE, region_handle, region_input, region_mask, region_spec

from xai_platform.errors import InputError, XAIError
from xai_platform.evaluation import metrics as m
from xai_platform.evaluation import report, scorecard

pytestmark = needs_torch


@pytest.fixture(scope="module")
def audio_model():
    """Audio masking is the window's dB floor: removing the region removes the evidence."""
    return region_handle("torch", "audio")


def random_maps(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.random((SIZE, SIZE)).astype(np.float32) for _ in range(count)]


def sobel(model, x, target):
    """An edge detector: ignores the model entirely."""
    import cv2

    return np.hypot(cv2.Sobel(x, cv2.CV_32F, 1, 0), cv2.Sobel(x, cv2.CV_32F, 0, 1))


def linear_region_handle():
    """x -> 3x3 conv -> ReLU -> linear head whose weights cover the region only: what the model
    'learned' lives in its top layer, so re-initialising that layer moves the evidence."""
    import torch
    from torch import nn

    from xai_platform.models.formats.torch import TorchHandle

    class LinearRegionNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
            self.head = nn.Linear(4 * SIZE * SIZE, 1)
            with torch.no_grad():
                self.features[0].weight.fill_(1 / 9)
                self.features[0].bias.zero_()
                w = torch.from_numpy(region_mask().astype(np.float32)).expand(4, -1, -1)
                self.head.weight.copy_(w.reshape(1, -1) * 5.0 / w.sum())
                self.head.bias.fill_(-2.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = self.head(self.features(x).flatten(1))[:, 0]
            return torch.stack([-s, s], dim=1)

    return TorchHandle(region_spec("torch", "xray"), LinearRegionNet(), device="cpu",
                       untrained=False)


# --- faithfulness ----------------------------------------------------------------------------

@pytest.mark.parametrize("modality", ["audio", "xray"])
def test_perfect_map_beats_random_maps_on_deletion_and_insertion(modality):
    model, x = region_handle("torch", modality), region_input(modality)
    perfect = m.deletion_insertion(model, x, region_mask().astype(np.float32), target=1)
    rand = [m.deletion_insertion(model, x, h, target=1) for h in random_maps(8)]
    rand_del = np.mean([c.deletion_auc for c in rand])
    rand_ins = np.mean([c.insertion_auc for c in rand])
    assert perfect.deletion_auc < rand_del and perfect.insertion_auc > rand_ins
    assert perfect.fractions.shape == perfect.deletion.shape == (21,)
    assert perfect.fractions[0] == 0 and perfect.fractions[-1] == 1
    # 42 planes, once (the log-odds, when the probability saturates, from the same passes)
    assert perfect.n_evaluations == 42
    # a random order removes and restores evidence at about the same pace (a little less
    # evenly on the log-odds, which are not bounded like probabilities)
    assert abs(rand_del - rand_ins) < (0.03 if perfect.scale == "probability" else 0.05)


def test_known_answers_on_audio_region_model(audio_model):
    x = region_input("audio")
    perfect = m.deletion_insertion(audio_model, x, region_mask().astype(np.float32), target=1)
    assert perfect.deletion_auc < 0.5 and perfect.insertion_auc > 0.9
    assert perfect.deletion[0] == pytest.approx(perfect.insertion[-1], abs=1e-5)  # both = x
    # the strongest evidence *for* the class first: a negated map is the worst order
    worst = m.deletion_insertion(audio_model, x, -region_mask().astype(np.float32), target=1)
    assert worst.deletion_auc > 0.9 and worst.insertion_auc < 0.5


def test_ties_are_broken_deterministically(audio_model):
    flat = np.zeros((SIZE, SIZE), np.float32)
    np.testing.assert_array_equal(m.ranking(flat), np.arange(SIZE * SIZE))
    a = m.deletion_insertion(audio_model, region_input("audio"), flat, target=1, steps=5)
    b = m.deletion_insertion(audio_model, region_input("audio"), flat, target=1, steps=5)
    np.testing.assert_array_equal(a.deletion, b.deletion)


def test_bad_heatmap_shape_is_refused(audio_model):
    with pytest.raises(ValueError, match="heatmap has shape"):
        m.deletion_insertion(audio_model, region_input("audio"), np.ones((4, 4)), target=1)


# --- localisation ----------------------------------------------------------------------------

def test_localisation_of_the_region_and_of_random_maps():
    region = region_mask()
    perfect = m.localisation(region.astype(np.float32), region, signed=False)
    assert perfect == {"pointing_game": 1.0, "top_k_iou": 1.0, "mass_inside": 1.0,
                       "region_fraction": pytest.approx(144 / 1024)}
    results = [m.localisation(h, region, signed=False) for h in random_maps(400, seed=1)]
    area = region.mean()
    assert np.mean([r["pointing_game"] for r in results]) == pytest.approx(area, abs=0.05)
    assert np.mean([r["mass_inside"] for r in results]) == pytest.approx(area, abs=0.01)
    assert np.mean([r["top_k_iou"] for r in results]) < 0.15


def test_localisation_counts_positive_evidence_only_when_signed():
    region = region_mask()
    h = np.where(region, 1.0, -1.0).astype(np.float32)
    assert m.localisation(h, region, signed=True)["mass_inside"] == 1.0
    assert m.localisation(h, region, signed=False)["mass_inside"] == pytest.approx(region.mean())
    # an empty map is chance, not a crash
    assert m.region_share(np.zeros_like(h), region) == pytest.approx(region.mean())


def test_xray_focus_flags_a_map_on_the_border():
    lungs = chest_like(SIZE) < 0.5
    assert 0.1 < lungs.mean() < 0.6
    border = m.border_mask((SIZE, SIZE), 0.05).astype(np.float32)
    flagged = m.xray_focus(border, lungs)
    assert flagged["flagged"] and flagged["border_share"] == 1.0
    assert flagged["lung_share"] == 0.0
    assert "points mostly outside the lungs" in flagged["message"]
    fine = m.xray_focus(lungs.astype(np.float32), lungs)
    assert not fine["flagged"] and fine["lung_share"] == 1.0 and fine["message"] == ""
    assert m.xray_focus(border, None)["flagged"]  # border check without lung masks


# --- randomisation ---------------------------------------------------------------------------

def test_randomization_tells_a_gradient_method_from_an_edge_detector():
    model, x = linear_region_handle(), region_input("xray")
    assert model.predict(x[None])[0, 1] > 0.8
    gradient = m.randomization_test(model, x, "saliency", target=1, seed=0)
    edges = m.randomization_test(model, x, sobel, target=1, seed=0)
    assert gradient["passed"] and abs(gradient["spearman"]) < 0.3
    assert not edges["passed"] and edges["spearman"] == pytest.approx(1.0)
    assert edges["ssim"] == pytest.approx(1.0)
    assert gradient["n_evaluations"] == 2 and gradient["threshold"] == m.RANDOMIZATION_THRESHOLD


def test_randomization_reuses_a_given_heatmap():
    model, x = linear_region_handle(), region_input("xray")
    heatmap, _ = m.explain_map(model, x, "saliency", target=1)
    result = m.randomization_test(model, x, "saliency", target=1, heatmap=heatmap)
    assert result["n_evaluations"] == 1  # the randomised model's map only


# --- stability and agreement -----------------------------------------------------------------

def test_stability_of_deterministic_and_stochastic_methods(audio_model):
    x = region_input("audio")
    exact = m.stability(audio_model, x, "gradcam", target=1)
    assert exact == {"pixel_std": 0.0, "spearman": 1.0, "stochastic": False, "n_seeds": 5,
                     "n_evaluations": 0, "seconds": 0.0}
    lime = m.stability(audio_model, x, "lime", target=1, seeds=(0, 1, 2),
                       params={"num_samples": 100})
    assert lime["stochastic"] and lime["n_evaluations"] == 300
    assert 0.0 < lime["pixel_std"] <= 1.0 and -1.0 <= lime["spearman"] <= 1.0
    first, _ = m.explain_map(audio_model, x, "lime", target=1, seed=0,
                             params={"num_samples": 100})
    reused = m.stability(audio_model, x, "lime", target=1, seeds=(0, 1, 2),
                         params={"num_samples": 100}, known={0: first})
    assert reused["n_evaluations"] == 200 and reused["spearman"] == lime["spearman"]
    rng = np.random.default_rng(0)
    noisy = m.stability(audio_model, x, lambda model, x, t: rng.random(x.shape), target=1,
                        seeds=(0, 1))
    assert abs(noisy["spearman"]) < 0.2 and noisy["pixel_std"] > 0.1


def test_agreement_of_a_map_with_itself_and_its_opposite():
    h = random_maps(1)[0]
    result = m.agreement({"b": h, "a": h, "neg": -h}, top_k=0.1)
    assert result["methods"] == ["b", "a", "neg"]
    np.testing.assert_allclose(result["top_k_iou"][:2, :2], 1.0)
    np.testing.assert_allclose(result["spearman"][:2, :2], 1.0)
    assert result["spearman"][0, 2] == pytest.approx(-1.0)
    assert result["top_k_iou"][0, 2] == 0.0
    with pytest.raises(ValueError, match="one shape"):
        m.agreement({"a": h, "b": h[:4]})
    np.testing.assert_array_equal(m.rank_average([3, 1, 3, 2]), [3.5, 1, 3.5, 2])
    assert m.spearman(np.zeros(4), np.zeros(4)) == 1.0 and m.spearman(np.zeros(4), h[0, :4]) == 0.0


# --- scorecard -------------------------------------------------------------------------------

def test_scorecard_ranks_a_perfect_map_above_a_random_one(audio_model):
    x = region_input("audio")
    cards = {}
    for name, heatmap in (("random", random_maps(1)[0]), ("perfect", region_mask() * 1.0)):
        cards[name] = scorecard.score_explanation(
            audio_model, x, heatmap, method="gradcam", target=1, metrics=("faithfulness",),
            region_mask=region_mask(), batch_size=64)
    perfect = cards["perfect"]
    assert set(perfect.values) == {"deletion_auc", "insertion_auc", "pointing_game",
                                   "top_k_iou", "mass_inside"}
    assert perfect.costs["faithfulness"].evaluations == 42  # on either scale (one pass)
    assert perfect.costs["localisation"].evaluations == 0
    json.dumps(perfect.to_dict())
    ranking = scorecard.rank_methods(cards)
    assert [r.method for r in ranking] == ["perfect", "random"] and ranking[0].rank == 1
    assert set(ranking[0].ranks) == {"insertion_auc", "deletion_auc", "pointing_game",
                                     "top_k_iou", "mass_inside"}
    text = scorecard.scorecard_markdown(perfect)
    assert "Deletion AUC" in text and "42 evals" in text and "Pointing game | yes" in text


def test_scorecard_from_an_explanation_runs_every_metric(audio_model):
    from xai_platform.pipeline import PreparedInput, analyse, explain

    prepared = PreparedInput("region", "audio", region_input("audio")[None])
    expl = explain(audio_model, analyse(audio_model, prepared), "saliency", target=1)
    card = scorecard.score_explanation(audio_model, None, expl, lung_mask=region_mask())
    assert card.method == "saliency" and card.explanation.evaluations == 1
    assert card.values["stability_spearman"] == 1.0  # deterministic: exact
    assert "lung_share" not in card.values  # lung focus is for X-rays only
    assert all(math.isfinite(v) for v in card.values.values())
    assert "exact" in scorecard.scorecard_markdown(card)
    assert "fails_randomization" not in card.flags or card.values["randomization_passed"] == 0


def test_compare_scores_ranks_and_agrees(audio_model):
    from xai_platform.pipeline import PreparedInput, analyse, explain

    analysis = analyse(audio_model, PreparedInput("region", "audio", region_input("audio")[None]))
    explanations = {k: explain(audio_model, analysis, k, target=1)
                    for k in ("gradcam", "saliency")}
    result = scorecard.compare(audio_model, explanations, metrics=("faithfulness",),
                               region_mask=region_mask())
    assert list(result.cards) == ["gradcam", "saliency"]
    assert {r.method for r in result.ranking} == {"gradcam", "saliency"}
    assert result.agreement["spearman"].shape == (2, 2)
    # both methods find the region of the region model
    assert all(c.values["pointing_game"] == 1.0 for c in result.cards.values())


def test_scorecard_rejects_unknown_metrics(audio_model):
    with pytest.raises(XAIError, match="unknown metric 'speed'"):
        scorecard.score_explanation(audio_model, region_input("audio"), region_mask() * 1.0,
                                    method="gradcam", target=1, metrics=("speed",))


def test_rank_methods_handles_ties_and_missing_criteria():
    ranking = scorecard.rank_methods({
        "a": {"insertion_auc": 0.9, "deletion_auc": 0.1, "randomization_rho": -0.1},
        "b": {"insertion_auc": 0.9, "deletion_auc": 0.1, "randomization_rho": 0.1},
        "c": {"insertion_auc": 0.5, "deletion_auc": 0.5, "randomization_rho": 0.9,
              "pointing_game": 1.0}})
    assert [(r.method, r.rank) for r in ranking] == [("a", 1), ("b", 1), ("c", 3)]
    assert "pointing_game" not in ranking[0].ranks  # only c has it


def _card(method, values, flags=()):
    return scorecard.Scorecard(method, method.upper(), 1, values, {},
                               flags={f: scorecard.FLAGS[f] for f in flags})


def test_a_method_failing_its_checks_ranks_below_every_method_that_passes():
    good = {"insertion_auc": 0.6, "deletion_auc": 0.3, "randomization_rho": 0.3}
    better_but_failing = {"insertion_auc": 0.99, "deletion_auc": 0.01, "randomization_rho": 0.0}
    cards = {"lime": _card("lime", better_but_failing, ("fails_randomization", "chance_order")),
             "gradcam": _card("gradcam", good),
             "shap": _card("shap", better_but_failing, ("chance_order",))}
    ranking = scorecard.rank_methods(cards)
    assert [(r.method, r.rank, r.passes) for r in ranking] == \
        [("gradcam", 1, True), ("lime", 2, False), ("shap", 2, False)]
    assert ranking[1].mean_rank < ranking[0].mean_rank  # would have won on the metrics alone
    table = scorecard.ranking_markdown(ranking)
    assert "| 1 | gradcam | passes |" in table
    assert "fails: the randomisation check; deletion / insertion no better than chance" in table
    assert "rank below every method that passes" in scorecard.trust_verdict(ranking)
    none_pass = scorecard.rank_methods({k: v for k, v in cards.items() if k != "gradcam"})
    assert "No map here can be trusted for this input" in scorecard.trust_verdict(none_pass)


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_outputs_give_the_probabilities_and_scores_of_one_forward_pass(framework):
    """What the faithfulness curves read when the probability saturates: both outputs of each
    plane, from the torch and the Keras engines alike, as predict and scores give them."""
    if framework == "keras":
        pytest.importorskip("tensorflow")
    handle = region_handle(framework, "audio")
    rng = np.random.default_rng(0)
    planes = np.stack([region_input("audio"), *rng.uniform(-80, 0, (2, SIZE, SIZE))])
    probs, scores = handle.outputs(planes, batch_size=2)  # two batches
    assert handle.outputs_in_one_pass and probs.dtype == scores.dtype == np.float32
    np.testing.assert_allclose(probs, handle.predict(planes), rtol=0, atol=1e-6)
    np.testing.assert_allclose(scores, handle.scores(planes), rtol=0, atol=1e-5)


def test_saturated_probability_scores_faithfulness_on_the_log_odds(audio_model, monkeypatch):
    """p = 1.0 for every plane (as p(fake) on a saturated recording): the probability curves
    say nothing, so deletion and insertion run on the log-odds; when those do not move either,
    the metric is marked uninformative and not ranked on."""
    x = region_input("audio")
    rows = {"probabilities": 0, "scores": 0}  # planes each kind of forward pass saw
    real_scores = audio_model._scores_batch

    def saturated(planes):
        rows["probabilities"] += len(planes)
        return np.tile(np.float32([0.0, 1.0]), (len(planes), 1))

    def scores(planes):
        rows["scores"] += len(planes)
        return real_scores(planes)

    def both(planes):  # one pass: the probabilities and the scores of the same raw outputs
        rows["probabilities"] += len(planes)
        return np.tile(np.float32([0.0, 1.0]), (len(planes), 1)), real_scores(planes)

    for name, fn in (("_predict_batch", saturated), ("_scores_batch", scores),
                     ("_outputs_batch", both)):
        monkeypatch.setattr(audio_model, name, fn)
    # the torch engine gives both from one pass: the log-odds cost no second pass
    assert audio_model.outputs_in_one_pass
    perfect = m.deletion_insertion(audio_model, x, region_mask().astype(np.float32), target=1)
    rand = m.deletion_insertion(audio_model, x, random_maps(1)[0], target=1)
    assert perfect.scale == rand.scale == "logit" and perfect.n_evaluations == 42
    assert rows == {"probabilities": 84, "scores": 0}
    assert perfect.deletion[0] == pytest.approx(1.0) and perfect.deletion[-1] == pytest.approx(0.0)
    assert perfect.deletion_auc < rand.deletion_auc and perfect.insertion_auc > rand.insertion_auc
    # an engine that gives them one at a time (a format without _outputs_batch) scores the
    # planes a second time, with the same curves
    monkeypatch.setattr(type(audio_model), "outputs_in_one_pass", False)
    rows.update(probabilities=0)
    twice = m.deletion_insertion(audio_model, x, region_mask().astype(np.float32), target=1)
    assert twice.n_evaluations == 84 and rows == {"probabilities": 42, "scores": 42}
    np.testing.assert_array_equal(twice.deletion, perfect.deletion)
    np.testing.assert_array_equal(twice.insertion, perfect.insertion)
    monkeypatch.setattr(type(audio_model), "outputs_in_one_pass", True)
    card = scorecard.score_explanation(audio_model, x, region_mask() * 1.0, method="gradcam",
                                       target=1, metrics=("faithfulness",))
    assert "saturated" in card.flags and "(log-odds)" in scorecard.scorecard_markdown(card)

    flat = lambda planes: np.tile(np.float32([-3.0, 3.0]), (len(planes), 1))  # noqa: E731
    monkeypatch.setattr(audio_model, "_scores_batch", flat)
    monkeypatch.setattr(audio_model, "_outputs_batch", lambda planes: (saturated(planes),
                                                                       flat(planes)))
    dead = m.deletion_insertion(audio_model, x, region_mask().astype(np.float32), target=1)
    assert dead.scale == "uninformative" and math.isnan(dead.deletion_auc)
    assert dead.to_dict()["deletion_auc"] is None
    cards = {k: scorecard.score_explanation(audio_model, x, h, method="gradcam", target=1,
                                            metrics=("faithfulness",))
             for k, h in (("a", region_mask() * 1.0), ("b", random_maps(1)[0]))}
    assert all("uninformative" in c.flags and "chance_order" not in c.flags
               for c in cards.values())
    ranking = scorecard.rank_methods(cards)
    assert all(r.passes and "deletion_auc" not in r.ranks for r in ranking)
    assert "n/a" in scorecard.scorecard_markdown(cards["a"])


def test_render_agreement_draws_without_pyplot():
    import io

    from matplotlib.figure import Figure

    fig = scorecard.render_agreement(np.array([[1.0, -0.2], [-0.2, 1.0]]), ["A", "B"],
                                     title="rho")
    assert isinstance(fig, Figure)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue()[:4] == b"\x89PNG"


# --- batch report ----------------------------------------------------------------------------

def _write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8), mode="L").save(path)


@pytest.fixture
def xray_folder(tmp_path: Path) -> Path:
    """Two test images with lesion and lung masks, a train image the report leaves out and a
    corrupt test image it skips."""
    folder = tmp_path / "bench"
    rows = []
    for i, split in enumerate(["test", "test", "train"]):
        img = chest_like(64, seed=i)
        lungs = img < 0.5
        lesion = np.zeros_like(lungs)
        lesion[20:30, 36:46] = True
        _write_png(folder / f"images/{i}.png", img)
        _write_png(folder / f"lungs/{i}.png", lungs * 1.0)
        _write_png(folder / f"lesions/{i}.png", lesion * 1.0)
        rows.append({"path": f"images/{i}.png", "label": "lesion", "split": split,
                     "lesion_mask_path": f"lesions/{i}.png", "lung_mask": f"lungs/{i}.png"})
    (folder / "images/broken.png").write_bytes(b"not a png")
    rows.append({"path": "images/broken.png", "label": "normal", "split": "test",
                 "lesion_mask_path": "", "lung_mask": ""})
    with (folder / "metadata.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def _args(**kw) -> argparse.Namespace:
    parser = report.add_arguments(argparse.ArgumentParser())
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--device", default="cpu")
    argv = []
    for key, value in kw.items():
        for v in value if isinstance(value, list) else [value]:
            argv += [f"--{key.replace('_', '-')}", str(v)]
    return parser.parse_args(argv)


def test_evaluate_writes_csv_report_and_plots(tmp_path, xray_folder, capsys):
    from xai_platform.config import load_config

    config_path = write_config(tmp_path / "tiny.yaml", TINY_MODELS)
    config = load_config([config_path], base=None)
    out = tmp_path / "report"
    args = _args(model="tiny-torch-xray", data=str(xray_folder), method=["gradcam", "saliency"],
                 out=str(out), seed=3, config=[str(config_path)])
    assert report.main(args, config) == 0
    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4  # 2 readable test inputs x 2 methods
    assert {r["method"] for r in rows} == {"gradcam", "saliency"}
    assert {r["target"] for r in rows} == {"lesion"}
    numeric = ["deletion_auc", "insertion_auc", "randomization_rho", "stability_spearman",
               "pointing_game", "top_k_iou", "mass_inside", "lung_share", "border_share",
               "agreement_rho", "explain_seconds", "faithfulness_seconds",
               "randomization_evaluations", "randomized_pointing_game", "randomized_mass_inside"]
    for row in rows:
        for column in numeric:
            assert math.isfinite(float(row[column])), (column, row[column])
    text = (out / "report.md").read_text()
    assert "## Ranking" in text and "Gradient saliency" in text and "95 % percentile" in text
    assert "python -m xai_platform evaluate --model tiny-torch-xray" in text
    assert {code for r in rows for code in r["flags"].split()} <= set(scorecard.FLAGS)
    assert "## Skipped inputs (1)" in text and "broken.png" in text
    assert "not an independent test" not in text  # no mask supervision in this model's card
    assert "--method gradcam --method saliency" in text and "--seed 3" in text
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert {"insertion_auc.png", "runtime.png", "agreement_spearman.png"} <= set(plots)
    captured = capsys.readouterr()
    assert "[3/3] broken.png skipped" in captured.err and "metrics.csv" in captured.out
    # The model-free controls sit beside the methods, on the same inputs and masks.
    assert "## Controls: maps that ignore the model" in text
    for row in rows:
        assert 0 <= float(row["control_mass_inside"]) <= 1
        assert float(row["region_fraction"]) == pytest.approx(100 / 64 ** 2, rel=1e-5)


def test_report_warns_when_the_model_was_trained_on_the_masks(tmp_path, xray_folder, monkeypatch):
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    config = load_config([write_config(tmp_path / "tiny.yaml", TINY_MODELS)], base=None)
    from types import SimpleNamespace

    from xai_platform.models.cards import MaskSupervisionInfo

    card = SimpleNamespace(mask_supervision=MaskSupervisionInfo(layers=("features.3",),
                                                                weight=10.0))
    monkeypatch.setattr(ModelManager, "card", lambda self, model_id: card)
    paths = report.evaluate(ModelManager(config, device="cpu"), "tiny-torch-xray", xray_folder,
                            methods=["saliency"], out=tmp_path / "r", metrics=("faithfulness",),
                            progress=False)
    text = paths["report"].read_text()
    assert "Localisation here is not an independent test" in text and "`features.3`" in text


def test_input_control_is_the_intensity_above_the_floor():
    display = np.array([[-80.0, -20.0], [-50.0, -80.0]], np.float32)  # dB
    np.testing.assert_array_equal(m.input_control(display), [[0, 60], [30, 0]])
    region = np.array([[False, True], [False, False]])
    assert m.localisation(m.input_control(display), region, signed=False)["pointing_game"] == 1


def test_evaluate_audio_folder_without_metadata(tmp_path, wav_file, manager):
    paths = report.evaluate(manager, "tiny-torch-audio", wav_file.parent, methods=["gradcam"],
                            out=tmp_path / "audio", metrics=("faithfulness",), progress=False)
    with paths["csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and rows[0]["input"] == "voice.wav"
    assert "randomization_rho" not in rows[0]


def test_evaluate_explains_missing_data_and_bad_methods(tmp_path, manager, monkeypatch,
                                                        xray_folder):
    monkeypatch.setattr(report, "DATA_DIR", tmp_path)
    with pytest.raises(InputError, match="benchmark is missing .*training.xray_benchmark"):
        report.evaluate(manager, "tiny-torch-xray", "benchmark", out=tmp_path / "o")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no xray files"):
        report.evaluate(manager, "tiny-torch-xray", empty, out=tmp_path / "o")
    assert len(report.list_inputs(xray_folder, "xray", split="train")) == 1
    with pytest.raises(InputError, match="no row with split == val"):
        report.list_inputs(xray_folder, "xray", split="val")
    with pytest.raises(XAIError, match="unknown method 'nope'"):
        report.evaluate(manager, "tiny-torch-audio", empty, methods=["nope"],
                        out=tmp_path / "o")


def test_evaluate_takes_method_parameters_and_writes_them_into_the_command(tmp_path, manager,
                                                                           xray_folder):
    """``--param shap.estimator=kernel``: the run uses it (seeded: a kernel map's evaluations
    are the budget's), the report's command reproduces it, and a parameter for a method not
    evaluated, or a bad value, is refused before any input is read."""
    paths = report.evaluate(manager, "tiny-torch-xray", xray_folder, methods=["shap"],
                            out=tmp_path / "r", metrics=("faithfulness",), progress=False,
                            params={"shap": {"estimator": "kernel", "n_evaluations": 48}})
    with paths["csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(int(r["explain_evaluations"]) == 48 for r in rows)
    assert ("--param shap.estimator=kernel --param shap.n_evaluations=48"
            in paths["report"].read_text())
    assert report.method_params(["shap.adaptive=true", "lime.num_samples=64"]) == {
        "shap": {"adaptive": True}, "lime": {"num_samples": 64}}
    with pytest.raises(XAIError, match="METHOD.NAME=VALUE"):
        report.method_params(["estimator=kernel"])
    with pytest.raises(XAIError, match="which this run does not evaluate"):
        report.evaluate(manager, "tiny-torch-xray", xray_folder, methods=["shap"],
                        out=tmp_path / "o", params={"lime": {"num_samples": 64}})
    with pytest.raises(XAIError, match="must be one of"):
        report.evaluate(manager, "tiny-torch-xray", xray_folder, methods=["shap"],
                        out=tmp_path / "o", params={"shap": {"estimator": "magic"}})
    assert not (tmp_path / "o").exists()


def test_bootstrap_interval_contains_the_mean():
    mean, low, high, n = report.bootstrap_ci([1.0, 2.0, 3.0, float("nan")], seed=0)
    assert n == 3 and mean == 2.0 and 1.0 <= low <= mean <= high <= 3.0
    assert report.bootstrap_ci([])[3] == 0
