"""XAI Comparison page: several methods side by side for the same input and model.

Methods run fastest first and each result appears as soon as it is ready (the handler is a
generator). Results are cached per session, so asking again for the same input, model, method,
parameters and seed shows the stored explanation.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..errors import CancelledError, XAIError
from ..explainers import all_methods, get_method
from ..explanation import Explanation, counted
from ..service import Service, Session, run_order
from .common import (FIGURE_FORMAT, CurrentCheckboxGroup, ask, figure_file, file_label,
                     focus_markdown, input_path, method_details_markdown, skip_stale, throttled,
                     user_errors)


def caption(expl: Explanation, card: Any = None) -> str:
    """A card's heading: the method, its cost, the class explained, where the map looks (audio:
    on speech or on silence, with the warning when mostly on silence; X-ray: the lungs) and a
    flat map's note. Where the card's scorecard already lists every share the focus line
    gives (X-ray: share inside the lungs, on the border, and the warning among its flags), the
    line is left to the scorecard."""
    seed = f" · seed {expl.seed}" if expl.seed is not None else ""
    focus = expl.extras.get("focus") or {}
    shares = [k for k in focus if k.endswith("_share")]
    scored = card is not None and shares and all(k in card.values for k in shares)
    return (f"### {expl.method_label}\n{expl.seconds:.2f} s · {counted(expl.n_evaluations)}"
            f"{seed} · explaining '{expl.target_label}'"
            + ("" if scored else focus_markdown(expl))
            + (f"\n\n**{expl.flat_note}**" if expl.flat else ""))


METRICS = [("faithfulness (deletion / insertion)", "faithfulness"),
           ("sanity (model randomisation)", "randomization"),
           ("stability over 5 seeds (LIME, SHAP)", "stability")]
DEFAULT_METRICS = ["faithfulness", "randomization"]


FIRST_RUN = ("... No estimate yet: these methods and metrics have not all run on this model "
             "here. This comparison is timed; the next one says how long it will take.")
"""The status of a comparison without an estimate (:func:`estimate_text`)."""


def seconds_left(times: dict[str, tuple[float, float]] | None, methods: list[str],
                 done: int) -> float | None:
    """What the methods after the first ``done`` (in :func:`run_order`) took together the last
    time on this model (:class:`~xai_platform.service.MethodTimes`); None without a time for
    each."""
    if times is None:
        return None
    return sum(sum(times[m]) for m in run_order(methods)[done:])


def timed(service: Service, model_id: str, methods: list[str], metrics: tuple[str, ...]
          ) -> dict[str, tuple[float, float]] | None:
    """Each method's (explain, score) seconds on this model with its default parameters (what
    a comparison runs) and these metrics, from ``service.times``; None unless each was timed
    (and with no method or model chosen, which the comparison itself then asks for). Before
    the model loads, the times of the engine it ran on before (:meth:`Service.looked_up_as`)."""
    if not methods or not model_id:
        return None
    return service.times.comparison(service.looked_up_as(model_id),
                                    {m: service.resolved(model_id, m) for m in methods}, metrics)


def estimate_text(times: dict[str, tuple[float, float]] | None, methods: list[str],
                  loading: bool = False) -> str:
    """How long these methods will take, from what they took on this model before
    (:func:`timed`; "" without a time for each): the total and the two slowest, and whether
    loading the model comes first (not counted)."""
    total = seconds_left(times, methods, 0)
    if times is None or total is None:
        return ""
    slowest = sorted(times, key=lambda m: -sum(times[m]))[:2]
    parts = ", ".join(f"{get_method(m).label} {sum(times[m]):.0f} s" for m in slowest)
    hint = " Untick the slowest for a quicker look." if total >= 20 else ""
    return (f"about {total:.0f} s" + (" after loading the model" if loading else "")
            + f", as long as these methods took on this model before ({parts}).{hint}")


def compare(service: Service, session: Session, modality: str, audio: str | None,
            image: str | None, model_id: str, methods: list[str], seed: int, progress=None,
            metrics: tuple[str, ...] = ()):
    """The page's comparison of its upload (:meth:`Service.compare`)."""
    if not methods:
        raise ask("Tick at least one method.", "No method chosen")
    yield from service.compare(session, input_path(modality, audio, image), model_id, methods,
                               seed=seed, progress=progress, metrics=metrics)


def summary_outputs(explanations: dict[str, Explanation], cards: dict[str, Any], *,
                    partial: str = ""):
    """(ranking markdown, agreement figure or None) for the finished comparison; ``partial``
    says what was left out (e.g. after a Cancel)."""
    from ..evaluation.metrics import agreement
    from ..evaluation.scorecard import (rank_methods, ranking_markdown, render_agreement,
                                        trust_verdict)

    labels = {k: e.method_label for k, e in explanations.items()}
    text = ""
    if cards:
        ranking = rank_methods(cards)
        text = ("### Which explanation to trust for this input"
                + (f" ({partial})" if partial else "") + "\n"
                + trust_verdict(ranking) + " Then by mean rank over the metrics (lower is "
                "better; each scorecard has the values):\n\n"
                + ranking_markdown(ranking, labels))
    figure = None
    if len(explanations) > 1:
        matrix = agreement({k: e.heatmap for k, e in explanations.items()})
        # No title: the heading and the line above the plot say what it is (a title would be
        # cut off on the narrow figure of two or three methods).
        figure = render_agreement(matrix["spearman"], [labels[k] for k in matrix["methods"]])
        text += ("\n\n#### Agreement between methods\nRank correlation between every two maps "
                 "(1: the same order of cells; near 0: unrelated).")
    return text, figure


def comparison_report(service: Service, session: Session, modality: str, audio: str | None,
                      image: str | None, model_id: str, methods: list[str], seed: int,
                      metrics: tuple[str, ...] = (), progress=None) -> str:
    """The comparison as one self-contained HTML report (every method's figure and scorecard,
    the ranking and the agreement matrix); returns its path. What the page already computed
    comes from the session's cache."""
    explanations, cards = [], {}
    for _, _, method, expl, card in compare(service, session, modality, audio, image, model_id,
                                            methods, seed, progress=progress, metrics=metrics):
        explanations.append(expl)
        if card is not None:
            cards[method] = card
    return str(service.report(session, input_path(modality, audio, image), model_id,
                              explanations, cards=cards,
                              stem=f"comparison__{model_id}__{len(explanations)}-methods"))


def cancelled_status(done: int, total: int) -> str:
    """What the status line says after a Cancel."""
    return (f"**Cancelled after {done} of {total} methods.** "
            + ("The finished results and a partial ranking stay on the page." if done else
               "No method had finished."))


def build(service: Service, header: dict[str, Any], session: gr.State) -> dict[str, Any]:
    methods_all = all_methods()
    with gr.Row():
        methods = CurrentCheckboxGroup(label="Methods (default: all that apply)", choices=[])
        seed = gr.Number(value=0, precision=0, label="Seed", scale=0, min_width=120)
    hidden = gr.Markdown()
    metrics = gr.CheckboxGroup(METRICS, value=DEFAULT_METRICS,
                               label="Score the explanations (each metric costs extra model "
                                     "evaluations, shown in the scorecards; untick all to skip)")
    # how long the ticked methods took on this model before: seen before Compare is pressed
    expected = gr.Markdown()
    with gr.Row():
        run = gr.Button("Compare", variant="primary")
        cancel = gr.Button("Cancel", variant="stop")
        report_btn = gr.Button("Download report")
    report_file = gr.File(label="Report (one HTML file: figures, scorecards, ranking, agreement, "
                                "records)", interactive=False, visible=False)
    # The one progress display of a comparison (the event shows its progress here only, so
    # finished cards stay sharp while the next method runs).
    status = gr.Markdown(min_height=40)
    ranking = gr.Markdown()
    # The figure carries its own title; the ranking text ends with the section's heading.
    agreement_plot = gr.Plot(label="Agreement between methods", show_label=False, visible=False,
                             format=FIGURE_FORMAT)
    images, captions, details, scores = [], [], [], []
    slots = []
    # One card per row, the figure at full width: readable without zooming.
    for _ in methods_all:
        with gr.Column(visible=False) as col:
            captions.append(gr.Markdown())
            images.append(gr.Image(type="numpy", interactive=False, show_label=False,
                                   buttons=["fullscreen"], format=FIGURE_FORMAT))
            with gr.Row(equal_height=False):
                scores.append(gr.Markdown())
                with gr.Accordion("What this method computes", open=False):
                    details.append(gr.Markdown())
        slots.append(col)

    @skip_stale
    @user_errors
    def on_model(model_id):
        ok, why_not = service.methods(model_id) if model_id else ([], {})
        hidden_md = "\n".join(f"- **{label}** hidden: {reason}" for label, reason in why_not.items())
        choices = [(get_method(m).label, m) for m in ok]
        return gr.update(choices=choices, value=ok), hidden_md

    @user_errors
    def on_compare(sess, modality, audio, image, model_id, chosen, seed_v, chosen_metrics,
                   progress=gr.Progress()):
        # nothing uploaded: say so before "Running ..."
        shown = file_label(input_path(modality, audio, image))
        n = len(slots)
        explanations, cards = {}, {}
        hidden_plot = gr.update(visible=False, value=None)
        total = len(chosen or [])
        metric_ids = tuple(chosen_metrics or ())
        times = timed(service, model_id, list(chosen or []), metric_ids)
        estimate = estimate_text(times, list(chosen or []), not service.loaded(model_id))
        # The first update clears the cards of an earlier comparison; later ones send only
        # what changed (the new card), so finished figures are not encoded and sent again
        # after every method (gr.skip(): the component keeps what it shows).
        # the model and the file are named: the page keeps these results when another model
        # or file is chosen (the cards' inputs are spectrograms or small images)
        on = (f" on {service.spec(model_id).name}" if model_id else "") + f" for {shown}"
        yield (f"Running {total} methods{on}" + (f": {estimate}" if estimate else FIRST_RUN),
               *[gr.update(visible=False)] * n, *[""] * n,
               *[None] * n, *[""] * n, *[""] * n, "", hidden_plot)
        skip = gr.skip()

        def card_update(k: int, col, cap, img, det, score) -> tuple:
            parts = []
            for value in (col, cap, img, det, score):
                part = [skip] * n
                part[k] = value
                parts += part
            return tuple(parts)

        unchanged = (skip,) * (5 * n)
        try:
            for done, total, method, expl, card in compare(
                    service, sess, modality, audio, image, model_id, list(chosen or []), seed_v,
                    progress=throttled(progress), metrics=metric_ids):
                explanations[method] = expl
                figure = figure_file(service, sess, expl)
                score = ""
                if card is not None:
                    from ..evaluation.scorecard import scorecard_markdown

                    cards[method] = card
                    score = scorecard_markdown(card)
                note = " (untrained model: no verdict)" if expl.untrained else ""
                left = seconds_left(times, list(chosen or []), done) if done < total else None
                if left is not None:
                    note += f" · about {left:.0f} s left"
                yield (f"{done} of {total} methods done{note}",
                       *card_update(done - 1, gr.update(visible=True), caption(expl, card),
                                    figure, method_details_markdown(method), score), skip, skip)
        except CancelledError:
            done = len(explanations)
            text, figure = summary_outputs(explanations, cards,
                                           partial=f"partial: {done} of {total} methods")
            yield (cancelled_status(done, total), *unchanged, text,
                   gr.update(visible=figure is not None, value=figure))
            return
        text, figure = summary_outputs(explanations, cards)
        yield (f"All {len(explanations)} methods done{on}." + (" Ranking and agreement below."
                                                           if len(explanations) > 1 else ""),
               *unchanged, text, gr.update(visible=figure is not None, value=figure))

    @user_errors
    def on_report(sess, modality, audio, image, model_id, chosen, seed_v, chosen_metrics,
                  progress=gr.Progress()):
        path = comparison_report(service, sess, modality, audio, image, model_id,
                                 list(chosen or []), seed_v,
                                 metrics=tuple(chosen_metrics or ()),
                                 progress=throttled(progress))
        return gr.update(value=path, visible=True)

    @skip_stale
    def on_expected(model_id, chosen, chosen_metrics):
        try:
            text = estimate_text(timed(service, model_id, list(chosen or []),
                                       tuple(chosen_metrics or ())), list(chosen or []),
                                 not service.loaded(model_id))
        except (XAIError, OSError):  # a hint: the Compare button reports what is wrong
            return ""
        return f"*Expected: {text}*" if text else ""

    def on_cancel(sess):
        # The running comparison sees the flag at its next batch and reports what finished.
        sess.cancel.set()
        return "Cancelling: the comparison stops at the running method's next batch..."

    expecting = ([header["model"], methods, metrics], [expected])
    # another model may list the same methods, which then fire no change of their own
    header["model"].change(on_model, [header["model"]], [methods, hidden],
                           api_visibility="private").then(
        on_expected, *expecting, show_progress="hidden", api_visibility="private")
    for changed in (methods, metrics):
        changed.change(on_expected, *expecting, show_progress="hidden", api_visibility="private")
    run.click(on_compare, [session, header["modality"], header["audio"], header["image"],
                           header["model"], methods, seed, metrics],
              [status, *slots, *captions, *images, *details, *scores, ranking, agreement_plot],
              show_progress_on=[status], api_visibility="private").then(
        on_expected, *expecting, show_progress="hidden", api_visibility="private")
    cancel.click(on_cancel, [session], [status], queue=False, show_progress="hidden",
                 api_visibility="private")
    report_btn.click(on_report, [session, header["modality"], header["audio"], header["image"],
                                 header["model"], methods, seed, metrics], [report_file],
                     api_visibility="private")
    return {"report": report_btn, "report_file": report_file, "methods": methods, "hidden": hidden, "run": run, "status": status,
            "on_model": on_model, "expected": expected, "on_expected": on_expected,
            "expecting": expecting}
