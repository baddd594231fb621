"""The typed model card: the shipped cards, the old layouts, and reading that never fails."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from xai_platform.models.cards import (CardError, ModelCard, calibration_from_card, card_path,
                                       read_card)

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
SHIPPED = sorted(WEIGHTS.rglob("*.card.json"))
TOP_LEVEL = {f.name for f in dataclasses.fields(ModelCard)}

_METRICS = {"n": 10, "n_positive": 5, "roc_auc": 0.9, "eer": 0.1,
            "sensitivity_at_90_specificity": 0.8, "false_alarm_rate": 0.1, "miss_rate": 0.1,
            "accuracy": 0.9, "threshold": 0.4, "reliability": {"bins": [], "ece": 0.02}}

# The X-ray trainer's first layout: the model's fields at the top level, `val`, a top-level
# `command`, `reliability_figure`.
OLD_XRAY = {
    "model": "xray-old", "name": "Old X-ray", "architecture": "custom_cnn", "framework": "torch",
    "arch_args": None, "input": {"size": [32, 32], "channels": 1, "normalize": "minus1_1"},
    "labels": ["normal", "lesion"], "positive_label": "lesion", "notice": "not clinical",
    "data": {"kind": "xray_benchmark", "root": "data/b", "command": "python -m x", "seed": 0},
    "splits": {"train": {"n": 20, "n_positive": 10}, "val": {"n": 10, "n_positive": 5}},
    "warmup": {"epochs": 1, "best_val_auc": 0.7}, "mask_supervision": {"layers": ["features.1"], "weight": 2.0, "what": "w"},
    "metrics": {"train": _METRICS, "val": _METRICS, "test": _METRICS},
    "calibration": {"temperature": 1.5, "threshold": 0.4, "fitted_on": "val"},
    "training": {"epochs": 2, "epochs_run": 2, "best_epoch": 1, "best_val_auc": 0.9,
                 "stopped_by_time_limit": False, "history": [{"epoch": 1, "loss": 1.0,
                                                               "val": 0.9}],
                 "seconds": 3.0, "seconds_per_epoch": 1.5, "batch_size": 8, "lr": 0.01,
                 "weight_decay": 0.0001, "augment": True, "seed": 0, "threads": 1,
                 "time_limit_s": None},
    "weights": {"file": "xray-old.pt", "bytes": 100, "sha256": "ab", "dtype": "float16"},
    "reliability_figure": "xray-old.reliability.png", "command": "python -m training.train_xray",
    "environment": {"python": "3.11"}, "created": "2026-01-01T00:00:00+0000",
    "total_seconds": 4.0,
}

# The audio trainer's first layout: `validation`, `training.command`, `reliability_diagram`,
# the language lists under `splits`, the counts under `data.splits`.
OLD_AUDIO = {
    "model": {"id": "audio-old", "name": "Old audio", "framework": "torch",
              "architecture": "custom_cnn", "arch_args": {"width": 4}, "labels": ["real", "fake"],
              "positive_label": "fake", "output": "sigmoid", "target_layer": "features.1",
              "input": {"sample_rate": 16000}, "description": "d"},
    "data": {"kind": "offline corpus", "root": "data/c", "metadata_sha256": "cd",
             "corpus": {"command": "python -m training.audio_corpus", "seed": 0},
             "splits": {"train": {"real": 3, "fake": 4, "windows": 9, "languages": ["aa"],
                                  "generators": ["espeak-ng", "klettres"]}}},
    "generators_trained_on": ["espeak-ng"],
    "splits": {"rule": "by language", "train": ["aa"]},
    "calibration": {"temperature": 1.2, "threshold": 0.6, "fitted_on": "validation",
                    "method": "m", "verdict_rule": "v"},
    "metrics": {"validation": _METRICS, "test": {**_METRICS, "by_language": {},
                                                 "by_generator": {}},
                "test_uncalibrated_ece": 0.05, "robustness": {"low_vorbis": _METRICS}},
    "robustness_conditions": {"low_vorbis": "Vorbis"},
    "explanations": {"n_clips": 4, "target": "t", "window": "w", "gradcam": {"real": {}}},
    "explanations_methods": ["gradcam"],
    "reliability_diagram": "audio-old.reliability.png",
    "training": {"command": "python -m training.train_audio --model audio-old", "seed": 0,
                 "epochs": 1, "epochs_run": 1, "best_epoch": 1, "batch_size": 8, "lr": 0.001,
                 "threads": 1, "time_limit_s": None, "augmentation": "masks",
                 "cap_per_language": 3, "init": "random (seeded)",
                 "match_speech_duration_s": None, "train_seconds": 2.0,
                 "seconds_per_epoch": 2.0, "other_seconds": 1.0, "history": []},
    "weights": {"file": "audio-old.pt", "bytes": 100, "sha256": "ef",
                "dtype": "float16 state dict"},
}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_card_is_a_model_card_in_the_new_layout(path):
    """No unknown key anywhere, every top-level key written, and a lossless round trip; the
    file on disk is already what ``to_dict`` writes (scripts/migrate_cards.py ran)."""
    saved = json.loads(path.read_text(encoding="utf-8"))
    card = ModelCard.from_dict(saved, strict=True)
    assert set(saved) == TOP_LEVEL
    assert card.to_dict() == saved
    assert ModelCard.from_dict(card.to_dict()) == card
    # the split names of old cards are renamed ("val" -> "validation"); a read-out's threshold
    # is fitted on out-of-source scores of the training split (training.audio.train)
    assert card.calibration.fitted_on in ("validation", "out-of-source training")
    assert "val" not in card.metrics
    assert card.model.modality == path.parent.name  # weights/<modality>/
    assert card.weights.file and card.training.command.startswith("python -m training.")
    assert read_card(path.with_name(card.weights.file)) == card


def test_shipped_cards_exist():
    assert len(SHIPPED) >= 2, "no model cards under weights/"


def test_an_old_xray_card_loads_with_the_new_names():
    card = ModelCard.from_dict(OLD_XRAY, strict=True)
    assert card.model.id == "xray-old" and card.model.notice == "not clinical"
    assert card.model.modality == "xray"
    assert card.model.labels == ("normal", "lesion") and card.model.arch_args == {}
    assert set(card.metrics) == {"train", "validation", "test"}
    assert set(card.splits) == {"train", "validation"}
    assert card.calibration.fitted_on == "validation"
    assert card.training.command == "python -m training.train_xray"
    assert card.training.best_validation_auc == 0.9 and card.training.total_seconds == 4.0
    assert card.training.augmentation.startswith("online")
    assert card.training.warmup == {"epochs": 1, "best_validation_auc": 0.7}
    assert card.training.environment == {"python": "3.11"}
    assert card.reliability.file == "xray-old.reliability.png"
    assert card.reliability.split == "validation"
    assert card.mask_supervision.layers == ("features.1",)
    assert card.data.command == "python -m x" and card.data.details == {"seed": 0}
    assert ModelCard.from_dict(card.to_dict(), strict=True) == card


def test_an_old_audio_card_loads_with_the_new_names():
    card = ModelCard.from_dict(OLD_AUDIO, strict=True)
    assert card.model.id == "audio-old" and set(card.metrics) == {"validation", "test"}
    assert card.model.modality == "audio"
    assert card.splits["train"].n == 7 and card.splits["train"].n_positive == 4
    assert card.splits["train"].languages == ("aa",) and card.splits["train"].windows == 9
    assert card.data.split_rule == "by language"
    assert card.data.generators_trained_on == ("espeak-ng",)
    assert card.data.command == "python -m training.audio_corpus"
    assert card.data.details == {"metadata_sha256": "cd", "corpus": {"seed": 0}}
    assert card.training.seconds == 2.0 and card.training.options["cap_per_language"] == 3
    assert card.reliability.split == "test" and card.reliability.uncalibrated_ece == 0.05
    assert card.robustness["low_vorbis"].condition == "Vorbis"
    assert card.robustness["low_vorbis"].metrics.eer == 0.1
    assert card.explanations.methods == {"gradcam": {"real": {}}}
    assert ModelCard.from_dict(card.to_dict(), strict=True) == card


def test_unknown_keys_are_refused_only_when_strict():
    odd = {**OLD_AUDIO, "colour": "blue"}
    with pytest.raises(CardError, match=r"card: unknown key\(s\) \['colour'\]"):
        ModelCard.from_dict(odd, strict=True)
    assert ModelCard.from_dict(odd).model.id == "audio-old"


def test_an_unreadable_card_is_no_card(tmp_path, caplog):
    """A card is documentation: a broken one never stops a model from loading (it is logged,
    with what to do)."""
    weights = tmp_path / "m.pt"
    assert read_card(None) is None and read_card(weights) is None
    assert not caplog.records  # no card is no problem
    path = card_path(weights)
    for text in ("{not json", "[1, 2]", '{"model": {"id": "m"}}',
                 json.dumps({**OLD_AUDIO, "metrics": {"test": {"n": 1}}})):
        path.write_text(text)
        caplog.clear()
        assert read_card(weights) is None, text
        assert "not a complete model card" in caplog.text and "migrate_cards" in caplog.text
    with pytest.raises(CardError, match="incomplete"):
        ModelCard.from_dict({"model": {"id": "m"}})
    path.write_text(json.dumps(OLD_AUDIO))
    assert read_card(weights).model.id == "audio-old"


def test_calibration_from_card():
    card = ModelCard.from_dict(OLD_AUDIO)
    cal = calibration_from_card(card)
    assert cal.temperature == 1.2 and cal.threshold == 0.6
    assert calibration_from_card(None).temperature == 1.0
    assert calibration_from_card(None).threshold is None
    bad = dataclasses.replace(card, calibration=dataclasses.replace(card.calibration,
                                                                     temperature=-1.0))
    assert calibration_from_card(bad).temperature == 1.0
    nan = dataclasses.replace(card, calibration=dataclasses.replace(card.calibration,
                                                                     temperature="x"))
    assert calibration_from_card(nan).threshold is None


def test_the_card_module_imports_no_framework():
    """The app reads cards before any model loads: no torch, no TensorFlow."""
    import subprocess
    import sys

    code = ("import sys, xai_platform.models.cards; "
            "print(sorted({'torch', 'tensorflow'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True).stdout
    assert out.strip() == "[]"


def test_a_hand_written_calibration_block_is_still_applied(tmp_path):
    """A user's own model with only ``{"calibration": ...}`` beside it keeps its calibration."""
    from xai_platform.models.cards import read_calibration

    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"\0")
    (tmp_path / "mine.card.json").write_text(
        json.dumps({"calibration": {"temperature": 2.0, "threshold": 0.3}}))
    cal = read_calibration(weights)
    assert (cal.temperature, cal.threshold) == (2.0, 0.3)
    assert read_calibration(tmp_path / "none.pt").threshold is None
