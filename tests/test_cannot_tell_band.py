"""The "cannot tell" band: a model whose card has ``calibration.band`` gives a verdict only
outside it, and says "cannot tell" (with the way it leans) inside it, on the verdict, the label,
the figure title, the report and the batch record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, model_entry, needs_torch, tone, write_config
from xai_platform.explanation import Prediction

PAIR = ("real", "fake")


def _p(fake: float, **kw) -> Prediction:
    return Prediction(PAIR, np.array([1 - fake, fake], np.float32), positive=1, threshold=0.5,
                      band=(0.25, 0.75), **kw)


def test_inside_the_band_there_is_no_verdict_only_a_lean():
    from xai_platform.visualization.figure import title

    high, low, mid, mid_low = _p(0.8), _p(0.2), _p(0.6), _p(0.4)
    assert high.label == "fake" and not high.undecided and high.headline == "fake"
    assert high.verdict == "fake: p(fake) = 0.80, above this model's 'cannot tell' band (0.25-0.75)"
    assert low.label == "real" and low.verdict.startswith("real: p(fake) = 0.20, below this")
    assert mid.undecided and mid.headline == "cannot tell (leans fake)"
    assert mid_low.undecided and mid_low.headline == "cannot tell (leans real)"
    assert mid.verdict.startswith("cannot tell: p(fake) = 0.60 lies in this model's 'cannot "
                                  "tell' band (0.25-0.75)")
    assert "leans 'fake' (above its threshold of 0.50)" in mid.verdict
    assert mid.to_dict()["decided"] is False and high.to_dict()["decided"] is True
    assert mid.to_dict()["band"] == {"below": 0.25, "above": 0.75}
    # the ends belong to the verdicts; a flagged stretch decides whatever the mean says
    assert not _p(0.75).undecided and _p(0.75).label == "fake"
    assert not _p(0.25).undecided and _p(0.25).label == "real"
    flagged = _p(0.4, segments=((1.0, 3.0),), segment_phrase="synthetic speech")
    assert not flagged.undecided and flagged.label == "fake"
    # a threshold outside the band: the band's ends decide, the threshold only leans
    wide = Prediction(PAIR, np.array([0.25, 0.75], np.float32), positive=1, threshold=0.8,
                      band=(0.2, 0.7))
    assert wide.label == "fake" and not wide.undecided
    # one-sided with a band: 'fake' above it, 'cannot tell' inside, never 'real' below it
    one = dict(one_sided=True)
    assert _p(0.8, **one).headline == "fake"
    assert _p(0.6, **one).headline == "cannot tell (leans fake)"
    below = _p(0.1, **one)
    assert below.unconfirmed and below.headline == "no fake found (cannot confirm real)"
    assert below.verdict.startswith("no fake found: p(fake) = 0.10, below this model's "
                                    "'cannot tell' band (0.25-0.75). This model cannot confirm")
    # no band: the threshold alone, as before
    plain = Prediction(PAIR, np.array([0.4, 0.6], np.float32), positive=1, threshold=0.5)
    assert not plain.undecided and plain.verdict.startswith("fake: p(fake) = 0.60, above this "
                                                            "model's threshold")

    class Expl:  # what figure.title reads
        model_name, method_label, target_label, seconds, n_evaluations, seed = (
            "M", "Grad-CAM", "fake", 0.1, 1, None)
        prediction = mid

    assert "cannot tell (leans fake), p(fake) 60.0%" in title(Expl)


def test_a_verdict_says_how_often_real_voices_scored_as_high_or_fakes_as_low():
    """A score alone does not say how often a real voice reaches it. With the card's
    out-of-source real scores, a 'fake' verdict (or a lean towards fake) says what share of
    real voices from set-ups the model never heard scored as high, pooled and for the set-up
    that fared worst; with its test split's fake scores, a verdict that found no fake (or a lean
    towards real) says what share of those fakes scored as low."""
    from xai_platform.explanation import ScoreShares

    reals = ScoreShares({"games": (0.1, 0.5, 0.8, 0.9),
                         "letters": (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 0.95)})
    rates = reals.at(0.8)  # a score equal to a clip's counts as reached
    assert rates["by_group"]["games"] == {"n": 4, "share": 0.5}
    assert rates["by_group"]["letters"]["share"] == pytest.approx(0.2)
    assert rates["pooled"] == pytest.approx(4 / 14) and rates["groups"] == 2
    assert rates["worst_group"] == "games" and rates["worst"] == 0.5
    assert reals.at(0.99)["worst"] == 0 and reals.at(0.0)["pooled"] == 1
    fakes = ScoreShares({"vocoder": (0.05, 0.2, 0.3, 0.9), "tts": (0.6, 0.95)}, above=False)
    # a handful of clips is not named the worst beside groups large enough to say something
    small = ScoreShares({"few": (0.9, 0.95), "many": tuple(np.linspace(0, 0.92, 40))}).at(0.9)
    assert small["by_group"]["few"]["share"] == 1 and small["worst_group"] == "many"
    assert small["worst"] == pytest.approx(1 / 40)
    # ... and where only such a handful reaches the score, the verdict does not say "none"
    handful = _p(0.93, unseen_reals=ScoreShares({"few": (0.95,), "many": (0.1,) * 30}))
    assert handful.real_shares["worst"] == 0 and handful.real_shares["pooled"] > 0
    assert handful.verdict.endswith("3.2% scored this high, all of them in set-ups of fewer "
                                    "than 20 clips")
    low = fakes.at(0.2)  # from below, equal counts too
    assert low["by_group"]["vocoder"]["share"] == 0.5 and low["by_group"]["tts"]["share"] == 0
    assert low["pooled"] == pytest.approx(2 / 6) and low["worst_group"] == "vocoder"

    both = dict(unseen_reals=reals, test_fakes=fakes)
    high = _p(0.82, **both)
    assert high.verdict == ("fake: p(fake) = 0.82, above this model's 'cannot tell' band "
                            "(0.25-0.75). Of real voices from 2 recording set-ups, each scored "
                            "by a fit that never heard it, 21.4% scored this high (games: 25.0%, "
                            "the most of any one set-up)")
    assert high.miss_note == "" and high.to_dict()["real_voices_as_high"]["worst_group"] == "games"
    top = _p(0.97, **both)
    assert top.verdict.endswith("each scored by a fit that never heard it, none scored this high")
    lean = _p(0.62, **both)
    assert lean.undecided and lean.verdict.endswith(
        "the explanations show why, not a verdict. Of real voices from 2 recording set-ups, each "
        "scored by a fit that never heard it, 35.7% scored this high (games: 50.0%, the most of "
        "any one set-up)")
    assert lean.verdict == f"{lean.statement}. {lean.false_alarm_note}"
    # against the positive label: the fakes' side
    none_found = _p(0.1, one_sided=True, **both)
    assert none_found.false_alarm_note == "" and none_found.verdict == (
        none_found.statement + ". Of the 'fake' clips of its test split (2 generators; voices, "
        "languages and some generators training never had), 16.7% scored this low (vocoder: "
        "25.0%, the most of any one generator)")
    assert _p(0.02, **both).verdict.endswith("none scored this low")
    lean_real = _p(0.35, **both)
    assert lean_real.undecided and "50.0% scored this low (vocoder: 75.0%" in lean_real.verdict
    # the figures stay in the record either way; none without the card's scores
    assert none_found.to_dict()["real_voices_as_high"]["pooled"] > 0.5
    assert high.to_dict()["fakes_as_low"]["pooled"] == pytest.approx(4 / 6)
    plain = _p(0.8)
    assert plain.to_dict()["real_voices_as_high"] is None and plain.verdict == plain.statement


def test_the_band_is_read_from_the_card_and_a_bad_one_is_ignored(tmp_path):
    from xai_platform.models.cards import read_calibration

    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"\0")
    card = tmp_path / "mine.card.json"
    card.write_text(json.dumps({"calibration": {"temperature": 1.0, "threshold": 0.5,
                                                "band": {"below": 0.2, "above": 0.6}}}))
    assert read_calibration(weights).band == (0.2, 0.6)
    for bad in ({"below": 0.7, "above": 0.6}, {"above": 0.6}, {"below": "x", "above": 0.6},
                {"below": -0.1, "above": 0.6}):
        card.write_text(json.dumps({"calibration": {"threshold": 0.5, "band": bad}}))
        cal = read_calibration(weights)
        assert cal.band is None and cal.threshold == 0.5
    # the out-of-source real scores beside the band; unusable ones leave the band as it is
    good = {"below": 0.2, "above": 0.6, "out_of_source": {"real_scores": {"a": [0.9, 0.1]}}}
    card.write_text(json.dumps({"calibration": {"threshold": 0.5, "band": good}}))
    cal = read_calibration(weights)
    assert cal.band == (0.2, 0.6) and cal.unseen_reals.scores == {"a": (0.1, 0.9)}
    assert cal.unseen_reals.above
    for bad in ({"a": [1.5]}, {"a": []}, {"a": "x"}, [0.3], {}):
        good["out_of_source"]["real_scores"] = bad
        card.write_text(json.dumps({"calibration": {"threshold": 0.5, "band": good}}))
        cal = read_calibration(weights)
        assert cal.band == (0.2, 0.6) and cal.unseen_reals is None


def test_a_short_speech_band_is_read_only_where_adopted_and_never_narrower(tmp_path):
    from xai_platform.models.cards import read_calibration

    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"\0")
    card = tmp_path / "mine.card.json"

    def short_band(short):
        band = {"below": 0.3, "above": 0.7, "short_speech": short}
        card.write_text(json.dumps({"calibration": {"threshold": 0.5, "band": band}}))
        cal = read_calibration(weights)
        assert cal.band == (0.3, 0.7)  # the pooled band stands whatever the short one is
        return cal.short_band

    good = {"adopted": True, "below_s": 0.75, "below": 0.2, "above": 0.8}
    assert short_band(good) == (0.75, 0.2, 0.8)
    # the one rule that picks between them (the app's verdicts, the trainer's test figures):
    # the short band strictly below the limit; the pooled one where the speech is not measured
    cal = read_calibration(weights)
    assert cal.band_for(0.74) == (0.2, 0.8)
    assert cal.band_for(0.75) == cal.band_for(3.0) == cal.band_for(None) == (0.3, 0.7)
    assert short_band({**good, "adopted": False}) is None  # measured, not adopted
    for bad in ({**good, "below": 0.4}, {**good, "above": 0.6}, {**good, "below_s": 0},
                {**good, "below_s": "x"}, {"adopted": True}, "x"):
        assert short_band(bad) is None


def test_the_short_speech_band_is_adopted_only_where_validation_makes_fewer_errors():
    """training.audio.train.short_speech_band by rule S41-B: out of source, short clips' scores
    spread wider, so their band is wider; a limit is adopted only with at least 3 fewer
    validation errors and at most 5 points fewer verdicts; too few short clips: no candidate."""
    from training.audio.train import band_edges, short_speech_band

    rng = np.random.default_rng(0)

    def clips(n: int, spread_short: float):
        y = rng.integers(0, 2, n)
        speech = rng.uniform(0.3, 3.0, n)
        noise = np.where(speech < 1.0, spread_short, 0.1)
        p = np.clip(np.where(y == 1, 0.8, 0.2) + noise * rng.standard_normal(n), 0, 1)
        return y, p, speech

    oos, val = clips(4000, 0.35), clips(1000, 0.35)
    short = short_speech_band(oos, val, threshold=0.5, below=0.3, above=0.7)
    assert short["adopted"] and short["below_s"] in (0.5, 0.75, 1.0)
    assert short["below"] <= 0.3 and short["above"] >= 0.7  # it only ever widens
    chosen = short["candidates"][f"{short['below_s']:g}"]["validation"]
    assert chosen["errors"] <= short["validation_pooled"]["errors"] - 3
    # the band the card's tables and the app apply: the short one below the limit only
    below, above = band_edges({"below": 0.3, "above": 0.7, "short_speech": short},
                              np.array([short["below_s"] - 0.01, short["below_s"]]))
    assert (below[0], above[0]) == (short["below"], short["above"])
    assert (below[1], above[1]) == (0.3, 0.7)
    # short clips no worse than long ones: nothing to gain, nothing adopted
    flat = short_speech_band(clips(4000, 0.1), clips(1000, 0.1), threshold=0.5, below=0.3,
                             above=0.7)
    assert not flat["adopted"]
    # too few short clips out of source: no candidate is even tried
    y, p, speech = oos
    few = short_speech_band((y, p, np.maximum(speech, 2.5)), val, threshold=0.5, below=0.3,
                            above=0.7)
    assert not few["adopted"]
    assert all("validation" not in row for row in few["candidates"].values())


@needs_torch
def test_a_recording_with_little_speech_gets_the_card_s_wider_band(tmp_path):
    """Through the service, with voice activity detection on: a card's short-speech band
    applies to a recording with less speech than its limit (KLettres' 0.42 s) and not to one
    with more (the same voice twice, 0.80 s); the notes say which band and why."""
    import soundfile as sf

    from training.weights import save_weights
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.service import Service, Session

    voice, sr = sf.read(ROOT / "examples/audio/real_klettres_de_b.wav", dtype="float32")
    room = 0.002 * np.random.default_rng(0).standard_normal(int(2.5 * sr)).astype(np.float32)
    twice = tmp_path / "twice.wav"
    sf.write(twice, np.concatenate([voice, room, voice]), sr)
    config = load_config([write_config(tmp_path / "m.yaml", [model_entry()])], base=None)
    untrained = ModelManager(config, device="cpu").get("tiny-torch-audio")
    weights = save_weights(untrained.spec, untrained.net, tmp_path / "tiny.pt", half=False)
    card = tmp_path / "tiny.card.json"

    def analysed(path: Path, band: dict):
        card.write_text(json.dumps({"calibration": {"temperature": 1.0, "threshold": 0.5,
                                                    "band": band}}))
        entry = write_config(tmp_path / "w.yaml", [model_entry(weights=str(weights))],
                             app={"check_inputs": True})
        service = Service(ModelManager(load_config([entry], base=None), device="cpu"))
        return service.analyse(Session(folder=tmp_path), path, "tiny-torch-audio")

    short_voice = ROOT / "examples/audio/real_klettres_de_b.wav"
    fake = float(analysed(short_voice, {"below": 0.0, "above": 1.0}).prediction
                 .probabilities[1])
    pooled = {"below": max(0.0, fake - 0.2), "above": max(0.0, fake - 0.01)}
    wider = {"adopted": True, "below_s": 0.6, "below": 0.0, "above": min(1.0, fake + 0.05)}
    short = analysed(short_voice, {**pooled, "short_speech": wider})
    assert short.prepared.judged_seconds == pytest.approx(0.416, abs=0.01)
    assert short.prediction.band == (0.0, wider["above"]) and short.prediction.undecided
    note = next(n for n in short.notes if n.startswith("Short input"))
    assert note.startswith("Short input: 0.42 s to judge, under the 0.6 s below which")
    assert f"wider band 0.00-{wider['above']:.2f} applies instead of" in note
    # the same recording, a limit it passes: the pooled band, and a verdict
    passed = analysed(short_voice, {**pooled, "short_speech": {**wider, "below_s": 0.4}})
    assert passed.prediction.band == (pooled["below"], pooled["above"])
    assert passed.prediction.label == "fake" and not passed.prediction.undecided
    assert not any(n.startswith("Short input") for n in passed.notes)
    # more speech than the limit: the pooled band
    long = analysed(twice, {**pooled, "short_speech": wider})
    assert long.prepared.judged_seconds == pytest.approx(0.8, abs=0.01)
    assert long.prediction.band == (pooled["below"], pooled["above"])


@needs_torch
def test_the_app_says_cannot_tell_for_a_model_with_a_band(tmp_path):
    """End to end through the manager and the pipeline: the same recording gets a verdict
    from the model without a band, "cannot tell" once its card puts p(fake) inside a band,
    and a verdict again when the band lies below it; the notes say what the band is."""
    import soundfile as sf

    from training.weights import save_weights
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.pipeline import analyse, prepare
    from xai_platform.reports import prediction_section

    def manager_for(entry: dict, folder: Path) -> ModelManager:
        config = load_config([write_config(folder / "m.yaml", [entry])], base=None)
        return ModelManager(config, device="cpu", batch_size=8)

    untrained = manager_for(model_entry(), tmp_path).get("tiny-torch-audio")
    weights = save_weights(untrained.spec, untrained.net, tmp_path / "tiny.pt", half=False)
    wav = tmp_path / "tone.wav"
    sf.write(wav, tone(1.0, sr=16000), 16000)
    card = tmp_path / "tiny.card.json"

    def analysed(band: dict | None):
        cal = {"temperature": 1.0, "threshold": 0.5, **({"band": band} if band else {})}
        card.write_text(json.dumps({"calibration": cal}))
        manager = manager_for(model_entry(weights=str(weights)), tmp_path)
        handle = manager.get("tiny-torch-audio")
        return handle, analyse(handle, prepare(wav, handle.spec, settings=manager.config.app))

    _, plain = analysed(None)
    fake = float(plain.prediction.probabilities[1])
    assert not plain.prediction.undecided
    handle, inside = analysed({"below": max(0.0, fake - 0.05), "above": min(1.0, fake + 0.05)})
    assert inside.prediction.undecided and inside.prediction.headline.startswith("cannot tell")
    assert any("'Cannot tell' band" in n for n in inside.notes)
    html = prediction_section(inside.prediction, calibration=handle.calibration, card=None)
    assert "cannot tell" in html and "no verdict inside it" in html
    _, below = analysed({"below": 0.0, "above": max(0.0, fake - 0.01)})
    assert not below.prediction.undecided and below.prediction.label == "fake"
    assert below.prediction.verdict.startswith("fake:")
    assert "'cannot tell' band" in below.prediction.verdict
    assert "scored this high" not in below.prediction.verdict
    # with the card's out-of-source real scores (clip scores), a window's verdict says how
    # often real voices of unseen set-ups reached its score; a verdict from a flagged stretch
    # of windows does not (a clip's score is not a stretch's), but its record keeps the figures
    first = float(plain.window_probabilities[0, 1])
    scores = {"games": [first - 0.2, first + 0.01], "letters": [0.0, 0.0, 0.0, 0.0]}
    handle, told = analysed({"below": 0.0, "above": max(0.0, min(fake, first) - 0.01),
                        "out_of_source": {"real_scores": scores}})
    window = told.window_prediction(0)
    assert window.unseen_reals == told.prediction.unseen_reals and window.label == "fake"
    assert window.verdict.endswith("16.7% scored this high (games: 50.0%, the most of any one "
                                   "set-up)")
    assert window.to_dict()["real_voices_as_high"]["score"] == pytest.approx(first)
    assert told.prediction.segments and "scored this high" not in told.prediction.verdict
    assert told.prediction.to_dict()["real_voices_as_high"]["score"] == pytest.approx(fake)
    # the report tables every set-up, worst first, and the pool
    html = prediction_section(window, calibration=handle.calibration, card=None)
    assert "by recording set-up, each scored by a fit that never heard it" in html
    assert ("<tr><td>games</td><td>2</td><td>50.0%</td></tr><tr><td>letters</td><td>4</td>"
            "<td>0.0%</td></tr><tr><td>all</td><td>6</td><td>16.7%</td></tr>") in html
    assert "Test split clips labelled" not in html  # the card has no fake scores


def test_the_shipped_banded_card_says_what_the_band_does_per_source_and_generator():
    """The default audio model's card: its band, fitted on out-of-source scores, is what the
    app applies, and the Markdown card tables it per split, test source and test generator."""
    from training.cards import audio_markdown
    from xai_platform.models.cards import calibration_from_card, read_card

    weights = Path(__file__).resolve().parents[1] / "weights/audio/audio-whisper-readout.pt"
    card = read_card(weights)
    if card is None:
        pytest.skip("the shipped read-out's card is not there")
    band = calibration_from_card(card).band
    assert band is not None and band[0] <= card.calibration.threshold <= band[1]
    assert card.calibration.fitted_on == "out-of-source training"
    test = card.metrics["test"].band
    assert 0 < test["coverage"] < 1 and set(test["by_source"]) >= {"asterisk", "gcin"}
    text = audio_markdown(card)
    assert "## 'Cannot tell' band" in text and "| asterisk | 235 |" in text
    # the scores the verdicts quote agree with the card's tables at the band's edges: real
    # voices of unseen set-ups called fake, and the test split's fakes called real
    # (the scores are kept to 4 decimals and an edge is itself a clip's score, which can round
    # to the wrong side of it: each edge is read half a rounding step outwards)
    cal = calibration_from_card(card)
    for shares, table, edge, rate in (
            (cal.unseen_reals, card.calibration.band["out_of_source"]["by_source"],
             band[1] - 5e-5, "called_fake"),
            (cal.test_fakes, test["by_generator"], band[0] + 5e-5, "called_real")):
        assert shares is not None and set(shares.scores) == set(table)
        at_edge = shares.at(edge)["by_group"]
        for group, row in table.items():
            assert at_edge[group]["n"] == row["n"]
            if rate == "called_real" and cal.short_band is not None:
                # the test split's short clips are judged with the wider band: fewer of them
                # reach its lower edge than the pooled one
                assert row[rate] <= at_edge[group]["share"] + 0.5 / row["n"]
                continue
            assert at_edge[group]["share"] == pytest.approx(row[rate], abs=0.5 / row["n"])
    assert "no epochs: a linear read-out" in text and "0 of 0 epochs" not in text


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
