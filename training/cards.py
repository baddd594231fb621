"""The model card both trainers write: one :class:`~xai_platform.models.cards.ModelCard` built
from shared parts, saved beside the weights as JSON (read by the app) and Markdown (for people).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xai_platform.config import ModelSpec
from xai_platform.models.cards import (CardCalibration, ModelCard, ModelInfo, TrainingInfo,
                                       WeightsInfo, card_path)
from xai_platform.files import sha256

from .trainer import TrainConfig

CALIBRATION_METHOD = ("temperature scaling of the positive logit; threshold at the validation "
                      "equal-error point")


def model_info(spec: ModelSpec) -> ModelInfo:
    """The config entry as the card records it."""
    return ModelInfo(id=spec.id, name=spec.name, framework=spec.framework,
                     modality=spec.modality, architecture=spec.architecture,
                     arch_args=dict(spec.arch_args), labels=tuple(spec.labels),
                     positive_label=spec.labels[spec.positive_index], output=spec.output,
                     target_layer=spec.target_layer, input=dataclasses.asdict(spec.input),
                     description=spec.description or None, notice=spec.notice or None)


def calibration(temperature: float, threshold: float, *,
                verdict_rule: str | None = None, fitted_on: str = "validation",
                method: str = CALIBRATION_METHOD,
                band: dict[str, Any] | None = None) -> CardCalibration:
    """Temperature and threshold (by default both fitted on the validation split), and the
    "cannot tell" band where one was fitted."""
    return CardCalibration(temperature=temperature, threshold=threshold, fitted_on=fitted_on,
                           method=method, verdict_rule=verdict_rule, band=band)


def environment() -> dict[str, str]:
    """Python and the versions of the frameworks this run imported."""
    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "tensorflow", "keras", "numpy"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "?")
    return out


def training_info(config: TrainConfig, history: dict[str, Any], *, command: str,
                  seconds: float, augmentation: str, init: str = "random (seeded)",
                  options: dict[str, Any] | None = None, warmup: dict[str, Any] | None = None,
                  other_seconds: float | None = None,
                  total_seconds: float | None = None) -> TrainingInfo:
    """How the run went, from :func:`training.trainer.train`'s history and the clock."""
    epochs_run = len(history["epochs"])
    return TrainingInfo(
        command=command, seed=config.seed, epochs=config.epochs, epochs_run=epochs_run,
        best_epoch=history["best_epoch"], batch_size=config.batch_size, lr=config.lr,
        threads=config.threads, time_limit_s=config.time_limit_s,
        weight_decay=config.weight_decay, best_validation_auc=history["best_metric"],
        stopped_by_time_limit=epochs_run < config.epochs, augmentation=augmentation, init=init,
        options=options or {}, warmup=warmup, seconds=seconds,
        seconds_per_epoch=seconds / max(1, epochs_run), other_seconds=other_seconds,
        total_seconds=total_seconds, history=tuple(history["epochs"]),
        environment=environment(), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def weights_info(spec: ModelSpec, path: Path) -> WeightsInfo:
    """The weights file as saved."""
    return WeightsInfo(file=path.name, bytes=path.stat().st_size,
                       sha256=sha256(path) if path.is_file() else None,
                       dtype="float16 state dict" if spec.framework == "torch" else "float32")


def write_card(weights: Path, card: ModelCard) -> tuple[Path, Path]:
    """The model card beside the weights: JSON (read by the app) and Markdown (for people)."""
    json_path, md_path = card_path(weights, kind="json"), card_path(weights, kind="md")
    json_path.write_text(json.dumps(card.to_dict(), indent=2, default=float) + "\n")
    md_path.write_text(markdown(card))
    return json_path, md_path


# --------------------------------------------------------------------------------------------
# Markdown


def markdown(card: ModelCard) -> str:
    """The card for people, in the layout of its modality."""
    text = audio_markdown(card) if card.model.modality == "audio" else xray_markdown(card)
    return text + familiarity_markdown(card)


def familiarity_markdown(card: ModelCard) -> str:
    """The familiarity check (verdicts withheld outside the training data), if the card has one."""
    f = card.familiarity
    if f is None:
        return ""
    lines = ["", "## Verdict withheld outside the training data", "",
             f"Views of the {f.fitted_on} split: the {f.dims}-dim pooled activations of "
             f"`{f.layer}` (mean and top {f.components} principal components: Mahalanobis "
             "distance plus the residual)"
             + (" and the input's layout (4 x 4 block means and a 16-bin histogram)"
                if "layout" in f.views else "")
             + f"; the limits let {f.quantile:.0%} of the {f.limit_from} split through. An "
             "input beyond a limit gets no verdict (`withheld`). Share of inputs withheld:", "",
             "| inputs | withheld |", "|---|---|"]
    lines += [f"| {name} | {rate:.1%} |" for name, rate in f.withheld.items()]
    if f.command:
        lines += ["", "Reproduce:", "", "```", f.command, "```"]
    return "\n".join(lines) + "\n"


def pct(v: float | None) -> str:
    """A rate as a percentage with one decimal ("n/a" for None or NaN)."""
    return "n/a" if v is None or v != v else f"{100 * v:.1f}%"


def short_speech_markdown(band: Mapping[str, Any], pos: str) -> list[str]:
    """The band's short-speech part (``band.short_speech``): the band for recordings with
    little speech where one was adopted, and what each speech limit did on validation."""
    short = band.get("short_speech")
    if not short:
        return []
    pooled = short.get("validation_pooled") or {}
    head = (f"Recordings with less than {short['below_s']:g} s of speech (Silero VAD) get a "
            f"wider band: p({pos}) at or above {short['above']:.3f}, at or below "
            f"{short['below']:.3f}, from {short['clips']['real']} real and "
            f"{short['clips']['fake']} fake out-of-source training clips that short."
            if short.get("adopted") else
            "No wider band for recordings with little speech: no speech limit met the rule.")
    lines = [head + f" Rule: {short.get('method', 'n/a')}.", "",
             "| speech under | out-of-source clips (real / fake) | band | validation errors "
             "| validation verdicts |", "| --- | --- | --- | --- | --- |",
             f"| (pooled band) | | {band['below']:.3f}-{band['above']:.3f} | "
             f"{pooled.get('errors', 'n/a')} | {pct(pooled.get('verdicts'))} |"]
    for limit, row in (short.get("candidates") or {}).items():
        v = row.get("validation")
        lines.append(f"| {limit} s | {row['clips']['real']} / {row['clips']['fake']} | "
                     + (f"{row['below']:.3f}-{row['above']:.3f} | {v['errors']} | "
                        f"{pct(v['verdicts'])} |" if v else "too few clips | | |"))
    return lines + [""]


def band_markdown(card: ModelCard) -> list[str]:
    """The "cannot tell" band's section: how it was fitted and what it does on each split, per
    source and per generator (empty without a band)."""
    band = card.calibration.band
    if not band:
        return []
    pos = card.model.positive_label
    lines = ["## 'Cannot tell' band", "",
             f"p({pos}) at or above {band['above']:.3f}: '{pos}'; at or below "
             f"{band['below']:.3f}: the other label; in between no verdict ('cannot tell', with "
             f"the way it leans). Fitted on {band.get('fitted_on', 'n/a')} data"
             + (f" ({band['method']})" if band.get("method") else "") + ".", "",
             *short_speech_markdown(band, pos),
             *(["Below, each clip is judged with the band its speech gives it.", ""]
               if (band.get("short_speech") or {}).get("adopted") else []),
             "| split | clips with a verdict | real called fake | fakes called real | "
             "'fake' verdicts wrong | 'real' verdicts wrong |",
             "| --- | --- | --- | --- | --- | --- |"]
    for split in ("validation", "test"):
        b = card.metrics[split].band
        if b:
            lines.append(f"| {split} | {pct(b['coverage'])} | {pct(b['reals_called_fake'])} | "
                         f"{pct(b['fakes_called_real'])} | {pct(b['fake_verdicts_wrong'])} | "
                         f"{pct(b['real_verdicts_wrong'])} |")
    test = card.metrics["test"].band or {}
    out_of_source = band.get("out_of_source") or {}
    unseen = out_of_source.get("by_source")
    quoted = ("; a 'fake' verdict, or a lean towards it, says what share of these clips reached "
              "its input's score, from their scores kept in the JSON card"
              if out_of_source.get("real_scores") else "")
    tables = ((test.get("by_source"), "Real clips of each test source", "source | real clips",
               "called_fake"),
              (test.get("by_generator"), "Fake clips of each test generator",
               "generator | fake clips", "called_real"),
              (unseen, "Real clips of each training source, scored by the fit that never heard "
               "that source (what a recording set-up the model never heard can expect; the "
               f"band holds the pool of them, not each one, to its target{quoted})",
               "training source | real clips", "called_fake"))
    for rows, caption, columns, verdict in tables:
        if rows:
            lines += ["", f"{caption}:", "",
                      f"| {columns} | {verdict.replace('_', ' ')} | cannot tell |",
                      "| --- | --- | --- | --- |"]
            lines += [f"| {k} | {r['n']} | {pct(r[verdict])} | {pct(r['cannot_tell'])} |"
                      for k, r in rows.items()]
    return lines + [""]


def audio_markdown(card: ModelCard) -> str:
    """An audio detector's card: verdict quality per split, language and generator,
    robustness, what the explanations point at, data and training."""
    m, t, model = card.metrics, card.metrics["test"], card.model
    lines = [
        f"# Model card: {model.name} (`{model.id}`)", "",
        f"{model.description or ''}", "",
        "## Verdict quality on test languages never seen in training", "",
        "| split | clips (real / fake) | accuracy | EER | ROC AUC | false alarms | misses |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = [(split, m[split]) for split in ("validation", "test")]
    rows += [(f"test, {name}", check.metrics) for name, check in card.robustness.items()]
    for label, r in rows:
        lines.append(f"| {label} | {r.n - r.n_positive} / {r.n_positive} | "
                     f"{pct(r.accuracy)} | {pct(r.eer)} | {r.roc_auc:.4f} | "
                     f"{pct(r.false_alarm_rate)} | {pct(r.miss_rate)} |")
    cal, figure, val = card.calibration, card.reliability, m["validation"]
    where = ("the equal-error point on validation" if cal.fitted_on == "validation"
             else f"the equal-error point on {cal.fitted_on} data: {cal.method}")
    lines += [
        "", f"False alarms: real speech called fake; misses: fake speech called real, both at "
            f"the decision threshold {cal.threshold:.3f} ({where}, "
            f"after temperature scaling with T = {cal.temperature:.3f}). Expected "
            f"calibration error on test: {t.reliability['ece']:.3f} after, "
            f"{figure.uncalibrated_ece:.3f} before; "
            f"reliability diagram: `{figure.file}`. The probabilities are "
            f"calibrated for validation's class mix ({pct(val.n_positive / val.n)} "
            "fake); where fakes are rarer, read them as too high.", "",
    ]
    lines += band_markdown(card)
    if card.robustness:
        lines += ["Robustness rows: every test clip, real and fake alike, degraded the same way "
                  "before scoring:"]
        lines += [f"- {k}: {v.condition}" for k, v in card.robustness.items()]
        lines.append("")
    lines += ["### Per test language", "", "| language | real / fake | EER | false alarms | misses |",
              "| --- | --- | --- | --- | --- |"]
    for lang, r in (t.by_language or {}).items():
        lines.append(f"| {lang} | {r['n_real']} / {r['n_fake']} | {pct(r.get('eer'))} | "
                     f"{pct(r['false_alarm_rate'])} | {pct(r['miss_rate'])} |")
    lines += ["", "### Per generator (test)", ""]
    for gen, r in (t.by_generator or {}).items():
        what = "false alarms" if "false_alarm_rate" in r else "misses"
        rate = r.get("false_alarm_rate", r.get("miss_rate"))
        lines.append(f"- {gen}: {r['n']} clips, {what} {pct(rate)}")
    bands = card.explanations
    if bands:
        lines += ["", "## What the explanations point at", "",
                  f"{bands.n_clips} test clips, explained for their true class on their most "
                  "suspicious window; attribution summed per mel band, averaged over clips.", ""]
        for method, by_label in bands.methods.items():
            for label, r in by_label.items():
                tops = ", ".join(f"{b['centre_hz']} Hz ({100 * b['share']:.1f}%)"
                                 for b in r["top_bands"])
                lines.append(f"- {method}, {label} clips: top bands {tops}; below 1 kHz "
                             f"{pct(r['share_below_1khz'])}, 1-4 kHz {pct(r['share_1_to_4khz'])}, "
                             f"above 4 kHz {pct(r['share_above_4khz'])}")
    d, tr = card.data, card.training
    lines += ["", "## Data", "", f"- source: {d.kind} (`{d.root}`)"]
    if d.command:
        lines.append(f"- built by: `{d.command}` (seeded per clip; the split is "
                     "by language, see docs/AUDIO.md)")
    for split, s in card.splits.items():
        lines.append(f"- {split}: {s.n - s.n_positive} real / {s.n_positive} fake clips, "
                     f"{s.windows} windows; languages {', '.join(s.languages or ()) or 'n/a'}; "
                     f"generators {', '.join(s.generators or ())}")
    cap, match = tr.options.get("cap_per_language"), tr.options.get("match_speech_duration_s")
    readout = tr.options.get("readout")
    nap = (readout or {}).get("nap")
    projected = (f"; {nap['k']} directions of the recording set-up projected out of its input "
                 f"({nap['method']}; k chosen on the validation windows' ROC AUC: "
                 + ", ".join(f"{k}: {a}" for k, a in nap["validation_auc_by_k"].items()) + ")"
                 if nap else "")
    lines += [f"- generators seen in training: {', '.join(d.generators_trained_on or ())}; any "
              "other kind of synthetic speech is unseen",
              "", "## Training", "",
              f"- command: `{tr.command}`",
              (f"- seed {tr.seed}; no epochs: a linear read-out of {readout['features']} "
               f"features fitted by scikit-learn ({readout['model']}; C = {readout['c']}, "
               f"chosen on the validation windows' ROC AUC){projected}" if readout else
               f"- seed {tr.seed}; {tr.epochs_run} of "
               f"{tr.epochs} epochs (best validation AUC at epoch {tr.best_epoch}); batch "
               f"{tr.batch_size}, lr {tr.lr}; {tr.threads} CPU thread(s)"),
              f"- initialisation: {tr.init or 'random (seeded)'}",
              f"- augmentation (training windows only): {tr.augmentation or 'n/a'}"
              + (f"; at most {cap} clips per language and label" if cap else "")
              + (f"; as many real as fake clips per language and {match} s bin of speech "
                 "length" if match else ""),
              (f"- fitting time {tr.seconds:.0f} s (the encoder's features of every training "
               f"and validation window, and the fits), evaluation {tr.other_seconds:.0f} s"
               if readout else
               f"- training time {tr.seconds:.0f} s ({tr.seconds_per_epoch:.0f} s per "
               f"epoch), feature extraction and evaluation {tr.other_seconds:.0f} s"),
              f"- weights: `{card.weights.file}` ({card.weights.bytes / 1e6:.2f} MB, "
              f"sha256 {card.weights.sha256[:16]}...)",
              f"- architecture `{model.architecture}` {dict(model.arch_args)}, "
              + (f"input the raw waveform, {model.input['duration']} s at "
                 f"{model.input['sample_rate']} Hz (explained on its {model.input['n_mels']} "
                 "mel-band log spectrogram)" if model.input.get("kind") == "waveform" else
                 f"input {model.input['n_mels']} "
                 f"{'linear' if model.input.get('kind') == 'linear' else 'mel'} bands x "
                 f"{model.input['duration']} s at {model.input['sample_rate']} Hz"),
              ""]
    return "\n".join(lines)


def xray_markdown(card: ModelCard) -> str:
    """An X-ray detector's card: model, data, curriculum, mask supervision, training,
    calibration and the figures of every split."""
    model, tr, cal, sup = card.model, card.training, card.calibration, card.mask_supervision
    lines = [f"# {model.name} (`{model.id}`)", ""]
    if model.notice:
        lines += [f"**{model.notice}**", ""]
    lines += [f"- Architecture: `{model.architecture}` ({model.framework}), input "
              f"{model.input['size'][0]} px, {model.input['channels']} channel(s), "
              f"normalize `{model.input['normalize']}`",
              f"- Data: {card.data.kind} at `{card.data.root}`",
              *([f"- Warm-up: {tr.warmup['epochs']} epochs on `{tr.warmup['data']}` "
                 f"(contrast {tr.warmup.get('contrast')}), best validation AUC "
                 f"{tr.warmup['best_validation_auc']:.3f}"] if tr.warmup else []),
              *([f"- Mask supervision (training only): layers "
                 f"{', '.join(f'`{x}`' for x in sup.layers)}, weight {sup.weight:g}; "
                 f"{sup.what.split(': ', 1)[1]}"] if sup else []),
              f"- Trained {tr.epochs_run} epochs in {tr.seconds:.0f} s (best epoch "
              f"{tr.best_epoch})",
              f"- Calibration (validation): temperature {cal.temperature:.3f}, "
              f"threshold {cal.threshold:.3f}",
              f"- Weights: `{card.weights.file}`, {card.weights.bytes / 1e6:.1f} MB",
              "", "| split | n | positives | ROC AUC | accuracy | sens. @ 90 % spec. | "
                  "false alarms | misses |", "|---|---|---|---|---|---|---|---|"]
    for split, r in card.metrics.items():
        lines.append(f"| {split} | {r.n} | {r.n_positive} | {r.roc_auc:.3f} | "
                     f"{r.accuracy:.3f} | {r.sensitivity_at_90_specificity:.3f} | "
                     f"{r.false_alarm_rate:.3f} | {r.miss_rate:.3f} |")
    lines += ["", "Reproduce:", "", "```", tr.command, "```", ""]
    return "\n".join(lines)
