"""What both pages share: the input header (modality, model, upload, prediction), error
handling at the UI edge, and small renderers. Handlers are plain functions of plain values."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from ..errors import InputError, XAIError
from ..explanation import Explanation
from ..models.cards import calibration_from_card
from ..modalities import all_modalities, get_modality
from ..service import Service, Session

log = logging.getLogger("xai_platform.ui")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
#: How figures and plots travel to the page. Gradio's default for gr.Image and gr.Plot is lossy
#: WebP (quality 80, colour at half resolution), which smears a heatmap's single cells and
#: fades its faint ones (on an audio saliency figure 2% of the pixels moved by more than 16
#: levels of 255, up to 143); PNG shows the figure as drawn, for about the same encoding time.
FIGURE_FORMAT = "png"


def input_kind(modality: str) -> str:
    """The upload widget a modality's ``input_kind`` picks: "audio" (upload or microphone),
    anything else "file"."""
    return "audio" if get_modality(modality).input_kind == "audio" else "file"


def file_types(kind: str) -> list[str]:
    """Every extension the upload widget of ``kind`` accepts (its modalities' lists)."""
    return sorted({e for m in all_modalities() if input_kind(m.name) == kind
                   for e in m.extensions})


def user_error(exc: Exception, where: str) -> gr.Error:
    """The ``gr.Error`` a user sees for ``exc``: a platform error (a problem the user can fix)
    titled by what happened and logged as one line; anything unexpected as a short message, its
    traceback in the server log, never on the page."""
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, XAIError):
        log.warning("%s: %s: %s", where, exc.title, exc)
        return gr.Error(str(exc), title=exc.title, print_exception=False)
    log.error("unexpected error in %s:\n%s", where, traceback.format_exc())
    return gr.Error(f"Something went wrong ({type(exc).__name__}: {str(exc)[:200]}). "
                    "The app is still running; try again or another input.",
                    title=f"Unexpected error ({type(exc).__name__})", print_exception=False)


def ask(message: str, title: str) -> gr.Error:
    """A pop-up for a missing choice on the page ("Choose a method first.")."""
    return gr.Error(message, title=title, print_exception=False)


class _Stale:
    def __repr__(self) -> str:
        return "STALE"


#: What a :class:`CurrentDropdown` or :class:`CurrentCheckboxGroup` hands a handler for a value
#: its choices no longer hold: the page sent it before an update changed them (the events of a
#: page that is still loading, then the user switches the modality at once). Not the user's
#: mistake, and nothing to compute.
STALE: Any = _Stale()


def _current(preprocess: Callable[[Any], Any], payload: Any) -> Any:
    try:
        return preprocess(payload)
    except gr.Error:  # Gradio's "Value: ... is not in the list of choices: [...]"
        return STALE


@contextlib.contextmanager
def _no_stub_file() -> Iterator[None]:
    """Gradio writes a type stub (``common.pyi``) beside the module of every component class
    defined outside it, for its custom-component workflow; such a stub would hide the rest of
    this module from type checkers. Off while the two classes below are defined."""
    import gradio.component_meta as meta

    original = getattr(meta, "create_or_modify_pyi", None)
    if original is None:
        yield
        return
    meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        yield
    finally:
        meta.create_or_modify_pyi = original


with _no_stub_file():
    class CurrentDropdown(gr.Dropdown):
        """A dropdown whose choices the app changes (the models of a modality, the methods of
        a model, its classes, a recording's windows). An event the page sent before such a
        change carries a value the new choices lack, and Gradio would answer it with an error
        toast listing the choices. Here the handler gets :data:`STALE` instead: an automatic
        event skips its update (:func:`skip_stale`; the change brings its own), a pressed
        button asks the user to press it again (:func:`user_errors`)."""

        is_template = True  # drawn by the page as Gradio's dropdown

        def preprocess(self, payload: Any) -> Any:
            return _current(super().preprocess, payload)

    class CurrentCheckboxGroup(gr.CheckboxGroup):
        """:class:`CurrentDropdown` for a group of checkboxes (the comparison's methods)."""

        is_template = True

        def preprocess(self, payload: Any) -> Any:
            return _current(super().preprocess, payload)


def _stale(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return any(a is STALE for a in (*args, *kwargs.values()))


def skip_stale(fn: Callable[..., Any]) -> Callable[..., Any]:
    """For a handler the page fires by itself (a change, a load, a tab): no update
    (``gr.skip()``) where an input is :data:`STALE`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        return gr.skip() if _stale(args, kwargs) else fn(*args, **kwargs)

    return wrapper


#: A pressed button whose request carried a :data:`STALE` choice
STALE_MESSAGE = ("The page was still changing its choices (another modality or model) when "
                 "this request left it. Check the model and method shown, then press the button "
                 "again.")


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn platform errors into a readable message (:func:`user_error`) at the UI edge, and a
    request sent with a :data:`STALE` choice into :data:`STALE_MESSAGE`."""

    def report(exc: Exception) -> gr.Error:
        return user_error(exc, fn.__name__)

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if _stale(args, kwargs):
            raise gr.Error(STALE_MESSAGE, title="Choices changed", print_exception=False)

    if _is_generator(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any):
            check(args, kwargs)
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the UI edge
                raise report(exc) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        check(args, kwargs)
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the UI edge
            raise report(exc) from None

    return wrapper


def _is_generator(fn: Callable[..., Any]) -> bool:
    import inspect

    return inspect.isgeneratorfunction(fn)


def input_path(modality: str, audio: str | None, image: str | None) -> str:
    """The upload of the selected modality: the audio widget's or the file widget's. Nothing
    there: an :class:`InputError` that says where to put it (:func:`no_input_message`)."""
    path = audio if input_kind(modality) == "audio" else image
    if not path:
        raise InputError(no_input_message(modality))
    return path


def file_label(path: str | None) -> str:
    """The uploaded file's name as the page shows it, in code type (no markdown read into it):
    what a prediction, explanation or comparison that stays on the page is about."""
    return "`" + Path(path or "").name.replace("`", "'") + "`"


def no_input_message(modality: str) -> str:
    """What a button pressed with nothing uploaded says. The upload box follows the Modality
    choice, and the box of one modality turns away another's files (an X-ray dropped on the
    audio box is not kept), so it names the other modalities too."""
    mod = get_modality(modality)
    record = " (or record one with the microphone)" if input_kind(modality) == "audio" else ""
    others = [m.label for m in all_modalities() if m.name != mod.name]
    text = (f"Nothing to analyse yet: upload a file for '{mod.label}'{record}, then press the "
            "button again.")
    if others:
        text += (f" For {' or '.join(repr(o) for o in others)}, choose it under Modality first: "
                 "the upload box follows that choice.")
    return text


def model_choices(service: Service, modality: str) -> tuple[list[tuple[str, str]], str | None]:
    rows = service.models(modality)
    choices = [(r.label, r.id) for r in rows]
    usable = [r.id for r in rows if r.state == "ready"] or [r.id for r in rows if r.state != "unavailable"]
    return choices, (usable[0] if usable else (rows[0].id if rows else None))


def model_status_markdown(service: Service, model_id: str | None) -> str:
    if not model_id:
        return "No model for this modality is configured."
    row = next(r for r in service.models() if r.id == model_id)
    spec = service.spec(model_id)
    if row.state == "unavailable":
        head = f"**Unavailable.** {row.reason}"
    elif row.state == "untrained":
        head = ("**Untrained model**: it has no trained weights, so its outputs are random and "
                "never a verdict. Use it to try the explainers only.")
    else:
        head = "**Ready.**"
    card = service.manager.card(model_id)
    metrics = card.metrics.get("test") if card is not None else None
    extra = []
    if metrics is not None:
        shown = {k: getattr(metrics, k) for k in ("roc_auc", "eer", "accuracy")}
        extra.append("Test split: " + ", ".join(f"{k} {v:.3f}" for k, v in shown.items()))
    calibration = calibration_from_card(card)
    band, short = calibration.band, calibration.short_band
    if band is not None and spec.positive_label is not None:
        extra.append(f"**Cannot-tell band:** p({spec.positive_label}) between {band[0]:.2f} and "
                     f"{band[1]:.2f} gets no verdict, only the way it leans (the card says "
                     "how it was fitted and how often each verdict was wrong on held-out data)"
                     + (f"; between {short[1]:.2f} and {short[2]:.2f} for an input with less "
                        f"than {short[0]:g} s to judge (of speech, for audio)."
                        if short is not None else "."))
    if spec.one_sided and spec.positive_label is not None:
        other = next(lab for lab in spec.labels if lab != spec.positive_label)
        extra.append(f"**One-sided:** it can flag '{spec.positive_label}' but not confirm "
                     f"'{other}'; otherwise it answers \"no {spec.positive_label} found\".")
    if row.notice:
        extra.append(f"*{row.notice}*")
    desc = spec.description or ""
    return "  \n".join([head, f"{spec.framework} · {desc}".strip(" ·"), *extra])


def prediction_outputs(service: Service, session: Session, path: str | None, model_id: str):
    """(label dict for gr.Label, verdict markdown, timeline figure or None) for an input."""
    analysis = service.analyse(session, path, model_id)
    p = analysis.prediction
    label = {lab: float(v) for lab, v in zip(p.labels, p.probabilities)}
    if p.withheld:  # gr.Label would show the top class in large type: show the withholding
        label = "verdict withheld"
    elif p.undecided or p.unconfirmed:  # nor a label the model cannot decide or confirm
        label = p.headline
    # the file it is about: a prediction that returns after another file was chosen (the
    # choice clears the panel at once) still says whose it is
    lines = [f"### {'No verdict' if p.untrained else p.statement}",
             f"For {file_label(path)}\n"]  # a paragraph of its own, not the next line's start
    if p.false_alarm_note:
        lines.append(f"**How often real voices score this high:** {p.false_alarm_note}.")
    if p.miss_note:
        lines.append(f"**How often fakes score this low:** {p.miss_note}.")
    if p.untrained:
        lines.append(f"Highest output: {p.label} {p.score:.1%}. **The model is untrained: this "
                     "is not a verdict.**")
    if p.multilabel:
        lines.append("Ranked findings (probabilities after the library's calibrated thresholds; "
                     "0.5 is the decision point): " + ", ".join(f"{lab} {v:.0%}" for lab, v in p.ranked()[:5]))
    lines += [f"- {note}" for note in analysis.notes]
    timeline = service.timeline(analysis)
    return label, "\n".join(lines), (timeline_figure(timeline, analysis) if len(timeline) > 1 else None)


def timeline_figure(timeline: list[tuple[float, float | None]], analysis) -> Any:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..visualization.figure import STYLE

    spec_labels = analysis.prediction.labels
    positive = analysis.prediction.positive
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(7.5, 2.2), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        xs = [t for t, _ in timeline]
        ys = [np.nan if v is None else v for _, v in timeline]  # a gap where not scored
        # a marker per window while they stay apart; a long recording's hundreds merge into a band
        few = len(xs) <= 80
        ax.plot(xs, ys, "o-" if few else "-", color="#b2182b", lw=1.5 if few else 1.0)
        skipped = [t for t, v in timeline if v is None]
        if skipped:  # windows left out of the verdict (audio: no speech)
            ax.plot(skipped, [0.02] * len(skipped), "x", color="grey",
                    label=analysis.prepared.unscored_label or "not scored")
        if analysis.prediction.band is not None:  # no verdict inside it
            ax.axhspan(*analysis.prediction.band, color="grey", alpha=0.15, lw=0,
                       label="cannot tell")
        if analysis.prediction.threshold is not None:
            ax.axhline(analysis.prediction.threshold, color="grey", ls="--", lw=1,
                       label="threshold" if analysis.prediction.band is None else "lean")
        for i, (a, b) in enumerate(analysis.prediction.segments):
            ax.axvspan(a, b, color="#b2182b", alpha=0.12, lw=0,
                       label="flagged stretch" if i == 0 else None)
        ax.axvline(xs[analysis.default_window], color="#2166ac", lw=1,
                   label="explained window")
        ax.set_ylim(0, 1)
        ax.set_xlabel("window start (s)")
        ax.set_ylabel(f"p({spec_labels[positive] if positive is not None else 'class'})")
        ax.legend(fontsize=7, loc="upper right")
        ax.set_title("score per window", fontsize=9)
    return fig


PROGRESS_INTERVAL = 0.5
"""Seconds between two progress updates sent to the page. Each one makes the browser re-render
the status, and where the browser shares the machine's cores with the app that work slows the
explanations: a comparison on two cores sent 80 updates and took 9.0-9.8 s in headless
Chromium, 7.5 s with one update per 0.5 s (docs/BENCHMARKS.md, thirty-fourth session)."""


def throttled(progress: Callable[..., Any] | None, interval: float = PROGRESS_INTERVAL
              ) -> Callable[..., Any] | None:
    """``progress`` (a ``gr.Progress``) passed on at most once per ``interval`` seconds (the
    first call always); None stays None. The handler's next yield shows the final state."""
    if progress is None:
        return None
    last = -float("inf")

    def report(*args: Any, **kwargs: Any) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= interval:
            last = now
            progress(*args, **kwargs)

    return report


CARD_DPI = 90
"""The Comparison page's cards (the Classification page shows its download, at 110 dpi)."""


def figure_file(service: Service, session: Session, expl: Explanation) -> str:
    """A Comparison card for gr.Image: the three-panel figure as a PNG in the session's folder
    (:meth:`Service.figure` at :data:`CARD_DPI`), which Gradio serves as it is instead of
    encoding an array again."""
    return str(service.figure(session, expl, dpi=CARD_DPI))


def focus_markdown(expl: Explanation) -> str:
    """Where the map looks relative to what this upload holds (X-ray: the lungs; audio: the
    speech), with the modality's warning when it looks elsewhere (both pages)."""
    focus = expl.extras.get("focus")
    if not focus:
        return ""
    line = f"  \n{focus.get('summary', '')}".rstrip()
    return line + (f" **Warning: {focus['message']}**" if focus.get("flagged") else "")


def method_details_markdown(method_id: str) -> str:
    from ..explainers import get_method

    m = get_method(method_id)
    defaults = {p.name: p.default for p in m.params}
    seeded = (", stochastic: seeded" if m.uses_seed(defaults)
              else ", deterministic by default, seeded when it samples" if m.stochastic else "")
    return (f"**{m.label}** ({m.kind}, {m.specificity}{seeded})"
            f"  \n{m.description}  \n*Paper:* {m.paper}  \n*Caveats:* {m.caveats}")


def example_files(modality: str) -> list[str]:
    m = get_modality(modality)
    folder = EXAMPLES / m.examples if m.examples else None
    if folder is None or not folder.is_dir():
        return []
    # Ground-truth masks (``*.mask.png``) sit beside the images for the tests and the quality
    # report; they are not inputs.
    return sorted(str(p) for p in folder.iterdir()
                  if m.accepts(p) and not p.name.endswith(".mask.png"))
