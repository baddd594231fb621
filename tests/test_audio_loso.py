"""Leave-one-source-out folds: the recipe each fold trains with, and the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import yaml

from conftest import needs_torch
from test_audio_training import TINY_INPUT, tiny_corpus
from training.audio import loso
from training.audio import train as audio_train
from training.audio.corpus_v2 import build_fold, read_metadata, write_metadata
from training.audio.probe import detector_scores
from xai_platform.config import ROOT
from xai_platform.models.cards import read_card

RESEARCH = str(ROOT / "config" / "research")


def test_each_fold_trains_with_the_entrys_own_recipe_on_its_fold():
    extra = loso.recipe("audio-efficientnet-lite0-v2", [RESEARCH])
    assert extra == ["--epochs", "8", "--lr", "0.0005", "--init", "imagenet", "--augment",
                     "warp", "--seed", "0"]
    # the summaries every fold skips are not repeated from the entry's own command
    assert loso.recipe("audio-cnn-v3t", [RESEARCH]) == ["--epochs", "12", "--seed", "1",
                                                        "--threads", "1"]
    cmd = loso.train_command("audio-cnn-v2", [RESEARCH], Path("data/c"), "gcin",
                             Path("runs/loso-gcin.pt"), extra)
    assert cmd[cmd.index("--data") + 1] == str(Path("data/c/loso-gcin"))
    assert cmd[cmd.index("--out") + 1] == str(Path("runs/loso-gcin.pt"))
    assert cmd.count("--model") == 1 and "--no-robustness" in cmd


def test_the_report_reads_each_folds_card_and_names_what_it_let_through(tmp_path):
    # A real card (audio-cnn-v2's) stands for a trained fold: the report takes the held-out
    # split's rates at the fold's own threshold and the misses per generator.
    weights_dir = tmp_path / "folds"
    weights_dir.mkdir()
    for name in ("audio-cnn-v2.card.json", "audio-cnn-v2.card.md"):
        shutil.copy(ROOT / "weights" / "audio" / name,
                    weights_dir / name.replace("audio-cnn-v2", "loso-asterisk"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "metadata.csv").write_text(
        "path,label,source,split\nclips/a.flac,real,asterisk,test\n")
    out = tmp_path / "report" / "loso"
    assert loso.main(["--data", str(corpus), "--model", "audio-cnn-v2", "--config", RESEARCH,
                      "--weights-dir", str(weights_dir), "--out", str(out), "--no-train"]) == 0
    card = read_card(weights_dir / "loso-asterisk.pt")
    fold = json.loads(out.with_suffix(".json").read_text())["folds"][0]
    assert fold["eer"] == round(card.metrics["test"].eer, 4)
    assert fold["false_alarms"] == round(card.metrics["test"].false_alarm_rate, 4)
    assert fold["misses_by_generator"]["kokoro"] == round(
        card.metrics["test"].by_generator["kokoro"]["miss_rate"], 4)
    text = out.with_suffix(".md").read_text()
    assert "| asterisk |" in text and "kokoro" in text
    assert "--loso asterisk" in text


def test_selection_folds_train_on_their_own_folder_and_recipes_compare_on_shared_sources(
        tmp_path):
    cmd = loso.train_command("audio-cnn-v2", [RESEARCH], Path("data/c"), "fotaq",
                             loso.fold_weights(Path("runs"), "fotaq", "select"), [],
                             "select")
    assert cmd[cmd.index("--data") + 1] == str(Path("data/c/select-fotaq"))
    assert cmd[cmd.index("--out") + 1] == str(Path("runs/select-fotaq.pt"))

    def report(model, eers):
        return {"model": model, "data": f"data/{model}", "folds": [
            {"source": s, "eer": e, "false_alarms": e / 2} for s, e in eers.items()]}

    a = report("plain", {"fotaq": 0.2, "kajongg": 0.1, "warzone": 0.3})
    b = report("twins", {"fotaq": 0.1, "kajongg": 0.2, "warzone": 0.1, "bass": 0.5})
    paths = []
    for rep in (a, b):
        paths.append(tmp_path / f"{rep['model']}.json")
        paths[-1].write_text(json.dumps(rep))
    out = tmp_path / "cmp"
    assert loso.main(["--compare", *map(str, paths), "--out", str(out)]) == 0
    text = out.with_suffix(".md").read_text()
    # bass is only in one report: left out of the mean, and named
    assert "| **mean** | **20.0%** | **13.3%** |" in text
    assert "| folds with the lowest EER | 1 | 2 |" in text
    assert "Left out (not in every report): bass." in text


@needs_torch
def test_out_of_source_scores_come_from_the_fold_that_never_heard_each_source(tmp_path):
    # Two training sources; each fold (oos-<source>) trains without one of them, and the
    # gathered scores give every training clip of that source the probability of the fold
    # that never saw it, as a band for unseen set-ups is fitted on.
    data = tiny_corpus(tmp_path / "corpus")
    rows = read_metadata(data / "metadata.csv")
    for i, r in enumerate(rows):
        r["source"] = ("s1", "s2")[i % 2] if r["split"] == "train" else "v"
        r["key"] = f"clip-{i}"
    write_metadata(data / "metadata.csv", rows, fields=tuple(rows[0]))
    weights_dir = tmp_path / "folds"
    entry = {"id": "tiny-oos", "name": "Tiny", "framework": "torch", "modality": "audio",
             "architecture": "custom_cnn", "weights": str(tmp_path / "tiny-oos.pt"),
             "labels": ["real", "fake"], "positive_label": "fake", "output": "sigmoid",
             "target_layer": "features.1", "arch_args": {"width": 4, "depth": 2},
             "input": TINY_INPUT}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"models": [entry]}), encoding="utf-8")
    cache = tmp_path / "cache"
    for source in ("s1", "s2"):
        fold = build_fold(data, source, kind="oos")
        held = [r for r in read_metadata(fold / "metadata.csv") if r["split"] == "test"]
        assert held and {r["source"] for r in held} == {source}
        assert not any(r["split"] == "test" and r["source"] == "v"
                       for r in read_metadata(fold / "metadata.csv"))
        audio_train.main(["--model", "tiny-oos", "--config", str(config), "--data", str(fold),
                          "--out", str(loso.fold_weights(weights_dir, source, "oos")),
                          "--epochs", "1", "--batch-size", "8", "--seed", "0",
                          "--cache-dir", str(cache), "--run-dir", str(tmp_path / f"run-{source}"),
                          "--no-robustness", "--explain", ""])
    out = tmp_path / "report" / "oos"
    assert loso.main(["--out-of-source", "--data", str(data), "--model", "tiny-oos",
                      "--config", str(config), "--weights-dir", str(weights_dir),
                      "--out", str(out), "--cache-dir", str(cache), "--no-train"]) == 0
    scores = np.load(out.with_suffix(".scores.npz"))
    train_rows = [r for r in rows if r["split"] == "train"]
    assert sorted(scores["key"].tolist()) == sorted(r["key"] for r in train_rows)
    by_key = {r["key"]: r for r in train_rows}
    assert all(by_key[k]["source"] == s for k, s in zip(scores["key"], scores["source"]))
    assert all((by_key[k]["label"] == "fake") == y for k, y in zip(scores["key"], scores["y"]))
    assert ((scores["p"] >= 0) & (scores["p"] <= 1)).all()
    for source in ("s1", "s2"):
        mine = scores["source"] == source
        y, p, clips = detector_scores(
            "tiny-oos", [config], data / f"oos-{source}", cache, splits=("test",),
            weights=loso.fold_weights(weights_dir, source, "oos"))["test"]
        assert scores["key"][mine].tolist() == [c.key for c in clips]
        np.testing.assert_allclose(scores["p"][mine], p)
        assert scores["y"][mine].tolist() == list(y)
    # the entry's own weights were never trained: the scores cannot have come from them
    assert not (tmp_path / "tiny-oos.pt").exists()
    assert "out-of-source folds" in out.with_suffix(".md").read_text()
