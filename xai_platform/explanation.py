"""Predictions and explanations as data (the renderer and the exporters read these)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

UNTRAINED_NOTE = "UNTRAINED model: random weights, the output is not a verdict"


def counted(n: int, noun: str = "model evaluation") -> str:
    """``n`` and the noun, plural unless one: "1 model evaluation", "52 model evaluations"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass(frozen=True)
class ScoreShares:
    """Clips of one kind a model was measured on, grouped, as sorted calibrated p(positive):
    how often such clips reach a score, group by group. ``above``: count the clips at or above
    a score (real voices, against a verdict for the positive label); else at or below (fakes,
    against a verdict that found none). A score alone does not say this, and one group can sit
    far from the others (docs/AUDIO.md).

    From a model card: real voices of recording set-ups the model never heard
    (``calibration.band.out_of_source.real_scores``: each training source scored by a fit made
    without it) and the fakes of its test split (``metrics.test.band.fake_scores``: voices,
    languages and generators training never had), by generator."""

    scores: Mapping[str, tuple[float, ...]]
    above: bool = True
    #: the fewest clips a group needs to be named the worst (a share of a handful of clips says
    #: little); with no group that large, every group counts
    WORST_MIN_CLIPS = 20

    def at(self, p: float) -> dict[str, Any]:
        """The share of each group's clips, and of all of them, reaching ``p`` (from
        :attr:`above` or below); the group of :attr:`WORST_MIN_CLIPS` clips or more with the
        largest share (``worst``)."""
        counts = {}
        for group, values in self.scores.items():
            v = np.asarray(values)
            k = (len(v) - int(np.searchsorted(v, p, side="left")) if self.above
                 else int(np.searchsorted(v, p, side="right")))
            counts[group] = (k, len(v))
        shares = {group: k / n for group, (k, n) in counts.items()}
        eligible = [g for g, (_, n) in counts.items() if n >= self.WORST_MIN_CLIPS] or list(counts)
        worst = max(sorted(eligible), key=lambda group: shares[group])
        total = sum(n for _, n in counts.values())
        return {"score": float(p), "groups": len(shares),
                "pooled": sum(k for k, _ in counts.values()) / total,
                "worst_group": worst, "worst": shares[worst],
                "by_group": {group: {"n": n, "share": shares[group]}
                             for group, (_, n) in counts.items()}}


def _shares_sentence(head: str, rates: Mapping[str, Any], way: str, group: str) -> str:
    """``head``, then how many of the clips behind :meth:`ScoreShares.at`'s ``rates`` scored
    this ``way`` ("high", "low"), pooled and in the worst ``group``."""
    if rates["pooled"] == 0:  # not "worst": a group too small to be named may hold some
        return f"{head}none scored this {way}"
    if rates["worst"] == 0:
        return (f"{head}{rates['pooled']:.1%} scored this {way}, all of them in {group}s of "
                f"fewer than {ScoreShares.WORST_MIN_CLIPS} clips")
    return (f"{head}{rates['pooled']:.1%} scored this {way} ({rates['worst_group']}: "
            f"{rates['worst']:.1%}, the most of any one {group})")


@dataclass(frozen=True)
class Prediction:
    """A model's output for one input.

    probabilities: (K,) float32 in [0, 1]; softmax over labels, or independent per label when
    ``multilabel``. ``threshold`` is the decision threshold on ``labels[positive]`` for a binary
    model (chosen on validation data) or, for a multi-label model, per-label 0.5 after the
    library's calibration. ``segments``: (start s, end s) of each stretch of consecutive windows
    that scored positive (the segment rule in :mod:`xai_platform.pipeline`); any segment makes
    the input positive whatever the mean says. ``segment_phrase`` names what a segment holds
    ("synthetic speech"). ``withheld``: the input is unlike the model's training data
    (:mod:`xai_platform.familiarity`), so no verdict is given; ``reason`` says why and
    ``familiarity`` holds the measured distance (None: the model has no such check).
    ``one_sided``: the model can flag ``labels[positive]`` but not confirm the other label
    (``ModelSpec.one_sided``), so a negative decision reads "no <positive> found".
    ``band`` (below, above): the model's "cannot tell" band on p(positive), from its card
    (fitted where the verdicts' errors on data unlike the training data were measured): at or
    above ``above`` (or a flagged stretch) the input is called positive, at or below ``below``
    negative, and between them no verdict is given (``undecided``; the headline says which
    way the threshold leans). ``unseen_reals`` and ``test_fakes`` (:class:`ScoreShares`, from
    the card): how real voices of recording set-ups the model never heard scored, and how the
    fakes of its test split did; a verdict for the positive label, or a lean towards it, then
    says how often those real voices reached this input's score (:attr:`false_alarm_note`),
    and one against it how often those fakes scored as low (:attr:`miss_note`); neither for a
    flagged stretch, whose windows are not a clip's score.
    """

    labels: tuple[str, ...]
    probabilities: FloatArray
    multilabel: bool = False
    untrained: bool = False
    positive: int | None = None
    threshold: float | None = None
    segments: tuple[tuple[float, float], ...] = ()
    segment_phrase: str = ""
    withheld: bool = False
    reason: str = ""
    familiarity: dict[str, Any] | None = None
    one_sided: bool = False
    band: tuple[float, float] | None = None
    unseen_reals: ScoreShares | None = None
    test_fakes: ScoreShares | None = None

    @property
    def index(self) -> int:
        """The predicted class: positive for a binary model when the mean reaches its threshold
        (with a band: its upper end; below its lower end negative, and between them the
        threshold's lean) or a stretch of windows was flagged, else the argmax."""
        p = self.probabilities
        if self.positive is not None and self.threshold is not None and not self.multilabel:
            q = float(p[self.positive])
            if self.band is not None and not self.segments and not self.undecided:
                hit = q >= self.band[1]
            else:
                hit = q >= self.threshold or bool(self.segments)
            return self.positive if hit else 1 - self.positive
        return int(np.argmax(p))

    @property
    def undecided(self) -> bool:
        """p(positive) lies strictly inside the model's "cannot tell" band and no stretch was
        flagged: no verdict, only a lean."""
        if (self.band is None or self.untrained or self.multilabel or self.positive is None
                or self.threshold is None or self.segments):
            return False
        return self.band[0] < float(self.probabilities[self.positive]) < self.band[1]

    @property
    def label(self) -> str:
        return self.labels[self.index]

    @property
    def unconfirmed(self) -> bool:
        """A one-sided model's negative decision: nothing flagged, the other label not
        confirmed."""
        return (self.one_sided and not self.untrained and self.positive is not None
                and not self.multilabel and self.threshold is not None
                and self.index != self.positive)

    @property
    def headline(self) -> str:
        """The decision in a few words for the label box and figure titles."""
        if self.undecided:
            return f"cannot tell (leans {self.label})"
        if self.unconfirmed:
            return (f"no {self.labels[self.positive]} found "  # type: ignore[index]
                    f"(cannot confirm {self.label})")
        return self.label

    @property
    def score(self) -> float:
        return float(self.probabilities[self.index])

    def _shares(self, reference: ScoreShares | None) -> dict[str, Any] | None:
        if reference is None or self.positive is None or self.multilabel or self.untrained:
            return None
        return reference.at(float(self.probabilities[self.positive]))

    @property
    def real_shares(self) -> dict[str, Any] | None:
        """How often real voices of set-ups the model never heard reached this input's
        p(positive) (:meth:`ScoreShares.at`); None without them."""
        return self._shares(self.unseen_reals)

    @property
    def fake_shares(self) -> dict[str, Any] | None:
        """How often the fakes of the model's test split scored this input's p(positive) or
        lower; None without them."""
        return self._shares(self.test_fakes)

    def _quotes(self) -> bool:
        return not (self.withheld or self.segments or self.positive is None)

    @property
    def false_alarm_note(self) -> str:
        """For a decision or lean towards the positive label: how often real voices of set-ups
        the model never heard scored as high ("" otherwise, or without them)."""
        rates = self.real_shares
        if rates is None or not self._quotes() or self.index != self.positive:
            return ""
        return _shares_sentence(f"Of real voices from {rates['groups']} recording set-ups, "
                                "each scored by a fit that never heard it, ", rates, "high",
                                "set-up")

    @property
    def miss_note(self) -> str:
        """For a decision or lean against the positive label: how often the fakes of the
        model's test split scored as low ("" otherwise, or without them)."""
        rates = self.fake_shares
        if rates is None or not self._quotes() or self.index == self.positive:
            return ""
        pos = self.labels[self.positive]  # type: ignore[index]
        return _shares_sentence(f"Of the '{pos}' clips of its test split ({rates['groups']} "
                                "generators; voices, languages and some generators training "
                                "never had), ", rates, "low", "generator")

    def ranked(self) -> list[tuple[str, float]]:
        order = np.argsort(-self.probabilities, kind="stable")
        return [(self.labels[i], float(self.probabilities[i])) for i in order]

    @property
    def verdict(self) -> str:
        """What a user may read as the answer: :attr:`statement`, then the
        :attr:`false_alarm_note` or :attr:`miss_note` where there is one."""
        note = self.false_alarm_note or self.miss_note
        return f"{self.statement}. {note}" if note else self.statement

    @property
    def statement(self) -> str:
        """The decision and the calibrated probability together ("lesion: p(lesion) = 0.17,
        above this model's threshold of 0.11"), where the flagged stretches are ("fake:
        synthetic speech at 7.0-14.5 s; ..."); never a verdict for an untrained model."""
        if self.untrained:
            return f"no verdict ({UNTRAINED_NOTE}); highest output: {self.label} {self.score:.1%}"
        if self.withheld:
            return (f"verdict withheld: {self.reason}. The model would answer "
                    f"{self.label} ({self.score:.1%}); the explanations show why.")
        if self.multilabel:
            found = [f"{lab} {p:.0%}" for lab, p in self.ranked() if p >= 0.5]
            return "findings: " + (", ".join(found) if found else "none above threshold")
        if self.positive is None or self.threshold is None:
            return f"{self.label} ({self.score:.1%})"
        pos = self.labels[self.positive]
        p = float(self.probabilities[self.positive])
        if self.segments:
            where = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in self.segments)
            rule = (f"this model's threshold of {self.threshold:.2f}" if self.band is None
                    else f"this model's 'cannot tell' band ({self.band[0]:.2f}-"
                         f"{self.band[1]:.2f})")
            return (f"{pos}: {self.segment_phrase or repr(pos)} at {where} (windows above "
                    f"{rule}; p({pos}) over the whole input {p:.2f})")
        side = "above" if p >= self.threshold else "below"
        if self.band is not None:
            below, above = self.band
            if self.undecided:
                return (f"cannot tell: p({pos}) = {p:.2f} lies in this model's 'cannot tell' "
                        f"band ({below:.2f}-{above:.2f}), where its verdicts on data unlike its "
                        f"training data were wrong too often (see its card). It leans "
                        f"'{self.label}' ({side} its threshold of {self.threshold:.2f}); "
                        "the explanations show why, not a verdict")
            where = (f"{'above' if p >= above else 'below'} this model's 'cannot tell' band "
                     f"({below:.2f}-{above:.2f})")
            if self.unconfirmed:
                return (f"no {pos} found: p({pos}) = {p:.2f}, {where}. This model cannot "
                        f"confirm '{self.label}': it misses too many '{pos}' inputs unlike its "
                        "training data (see the model's notice)")
            return f"{self.label}: p({pos}) = {p:.2f}, {where}"
        if self.unconfirmed:
            return (f"no {pos} found: p({pos}) = {p:.2f}, {side} this model's threshold of "
                    f"{self.threshold:.2f}. This model cannot confirm '{self.label}': it "
                    f"misses most '{pos}' inputs unlike its training data (see the model's "
                    "notice)")
        return (f"{self.label}: p({pos}) = {p:.2f}, {side} this model's threshold of "
                f"{self.threshold:.2f}")

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "untrained": self.untrained,
                "multilabel": self.multilabel, "threshold": self.threshold,
                "verdict": self.verdict, "withheld": self.withheld,
                "one_sided": self.one_sided, "confirmed": not self.unconfirmed,
                "decided": not self.undecided,
                "band": None if self.band is None else {"below": self.band[0],
                                                        "above": self.band[1]},
                "reason": self.reason or None, "familiarity": self.familiarity,
                "real_voices_as_high": self.real_shares, "fakes_as_low": self.fake_shares,
                "segments": [{"start_s": round(a, 3), "end_s": round(b, 3)}
                             for a, b in self.segments],
                "probabilities": {lab: float(p) for lab, p in zip(self.labels, self.probabilities)}}


@dataclass(frozen=True)
class Explanation:
    """One explanation of one prediction.

    display: (H, W) float32, the input as the model sees it (grayscale in [0, 1], or log-mel dB);
    heatmap: (H, W) float32, same shape; in [0, 1] for unsigned methods, signed (positive =
    evidence for ``target``) where ``signed``; axes: the modality's display axes (e.g. time
    and frequency of an audio window), None for plain pixels.
    """

    model_id: str
    model_name: str
    modality: str
    method: str
    method_label: str
    display: FloatArray
    heatmap: FloatArray
    signed: bool
    prediction: Prediction
    target: int
    params: dict[str, Any]
    seed: int | None
    seconds: float
    n_evaluations: int
    axes: Any = None
    notes: tuple[str, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def target_label(self) -> str:
        return self.prediction.labels[self.target]

    @property
    def untrained(self) -> bool:
        return self.prediction.untrained

    @property
    def flat(self) -> bool:
        """True when the map is the same value everywhere: it shows nothing."""
        return bool(np.ptp(self.heatmap) == 0)

    @property
    def flat_note(self) -> str:
        if self.extras.get("no_positive_evidence"):
            return (f"This map is flat: {self.method_label} found no part of layer "
                    f"'{self.extras.get('layer')}' whose features raise the score for "
                    f"'{self.target_label}' (every weighted cell is negative, and the method "
                    "keeps only positive evidence). The model gives no localised reason for this "
                    "class at that layer; try Integrated Gradients, LIME or SHAP.")
        return (f"This map is flat: the score for '{self.target_label}' did not change under "
                f"{self.method_label}'s evaluations, so it points at nothing. A saturated or "
                "untrained model does this; try another method or input.")

    def heatmap_stats(self) -> dict[str, float]:
        h = self.heatmap
        flat = np.abs(h).ravel()
        k = max(1, flat.size // 10)
        top = np.partition(flat, -k)[-k:].sum() / max(float(flat.sum()), 1e-12)
        peak = np.unravel_index(int(np.argmax(h)), h.shape)
        return {"min": float(h.min()), "max": float(h.max()), "mean": float(h.mean()),
                "std": float(h.std()), "top10_share": float(top),
                "peak_row": int(peak[0]), "peak_col": int(peak[1])}

    def to_record(self) -> dict[str, Any]:
        """JSON-able description (no arrays): what was explained, how, and what it cost."""
        record = {
            "model": self.model_id, "model_name": self.model_name, "modality": self.modality,
            "method": self.method, "method_label": self.method_label,
            "target": self.target_label, "prediction": self.prediction.to_dict(),
            "params": dict(self.params), "seed": self.seed, "seconds": round(self.seconds, 4),
            "model_evaluations": self.n_evaluations, "signed": self.signed,
            "heatmap_shape": list(self.heatmap.shape), "heatmap_stats": self.heatmap_stats(),
            "notes": list(self.notes) + ([self.flat_note] if self.flat else []),
        }
        from .modalities import get_modality

        record.update(get_modality(self.modality).record(self))
        return record
