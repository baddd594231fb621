"""Classification page: one prediction, one method, its parameters and seed, the figure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..errors import XAIError
from ..explainers import Param, all_methods, get_method
from ..explanation import counted
from ..modalities import all_modalities, get_modality
from ..service import Pace, Service, Session, step_text
from .common import (FIGURE_FORMAT, CurrentDropdown, ask, file_label, focus_markdown,
                     input_path, method_details_markdown, skip_stale, throttled, user_errors)

AUTO_WINDOW = "the one behind the verdict"
PREDICTED = "the verdict's class"


@dataclass(frozen=True)
class ParamSlot:
    method: str
    param: Param


def param_slots() -> list[ParamSlot]:
    """One control per (method, parameter), over every modality's parameters."""
    slots: dict[tuple[str, str, tuple], ParamSlot] = {}
    for m in all_methods():
        for modality in all_modalities():
            for p in m.params_for(modality.name):
                slots.setdefault((m.id, p.name, p.modalities), ParamSlot(m.id, p))
    return list(slots.values())


def control_for(param: Param) -> gr.components.Component:
    """A Gradio control built from the range the registry declares."""
    kw = dict(label=param.label, info=param.help or None, visible=False, interactive=True)
    if param.kind == "bool":
        return gr.Checkbox(value=param.default, **kw)
    if param.kind == "choice":
        return gr.Dropdown(choices=list(param.choices), value=param.default, **kw)
    step = param.step or (1 if param.kind == "int" else 0.01)
    return gr.Slider(minimum=param.minimum, maximum=param.maximum, value=param.default, step=step,
                     **kw)


# --- handlers (plain functions) -------------------------------------------------------------

def method_choices(service: Service, model_id: str | None) -> tuple[list[tuple[str, str]], str | None, str]:
    """(choices (label, id) of the compatible methods, default, markdown of the hidden ones)."""
    if not model_id:
        return [], None, ""
    ok, hidden = service.methods(model_id)
    choices = [(f"{get_method(m).label}: {get_method(m).description}", m) for m in ok]
    lines = [f"- **{label}** hidden: {reason}" for label, reason in hidden.items()]
    return choices, (ok[0] if ok else None), "\n".join(lines)


def slot_visibility(service: Service, model_id: str | None, method_id: str | None) -> list[bool]:
    modality = service.spec(model_id).modality if model_id else None
    return [s.method == method_id and (not s.param.modalities or modality in s.param.modalities)
            for s in param_slots()]


def collect_params(method_id: str, modality: str, values: list[Any]) -> dict[str, Any]:
    """The selected method's parameter values from the flat list of controls."""
    out = {}
    for slot, value in zip(param_slots(), values):
        if slot.method == method_id and (not slot.param.modalities or modality in slot.param.modalities):
            out[slot.param.name] = value
    return out


def window_choices(service: Service, session: Session, path: str | None, model_id: str) -> list[str]:
    analysis = service.analyse(session, path, model_id)
    spec = service.spec(model_id)
    return [AUTO_WINDOW] + get_modality(spec.modality).window_names(spec, analysis.prepared)


def parse_window(choice: str | None) -> int | None:
    if not choice or choice == AUTO_WINDOW:
        return None
    return int(choice.split(":", 1)[0]) - 1


def paced(progress, label: str, seconds: float | None, pace: Pace | None = None):
    """``report(f, what)`` for an explainer: ``progress`` with the method's label and step,
    and how long is left: from ``seconds`` where the method took them on this model with these
    parameters before, else from its own pace so far (``pace``, a fresh :class:`Pace` by
    default); None without ``progress``."""
    if progress is None:
        return None
    pace = pace or Pace()

    def report(f: float, what: str) -> None:
        left = max(seconds * (1 - f), 0.0) if seconds is not None else pace.left(f)
        progress(f, desc=step_text(label, what)
                 + ("" if left is None else f" · about {left:.0f} s left"))

    return report


def kept_seconds(service: Service, model_id: str, method_id: str, params: dict[str, Any]
                 ) -> float | None:
    """What this method with these parameters took on this model before (the time the service
    kept, :meth:`Service.looked_up_as`); None when it never ran here."""
    return service.times.explain_seconds(service.looked_up_as(model_id), method_id,
                                         service.resolved(model_id, method_id, params))


def paced_for(service: Service, progress, model_id: str, method_id: str,
              params: dict[str, Any]):
    """:func:`paced` for this method on this model with these parameters, from the time the
    service kept of it."""
    return paced(progress, get_method(method_id).label,
                 kept_seconds(service, model_id, method_id, params))


def expected_text(service: Service, model_id: str | None, method_id: str | None,
                  modality: str, values: list[Any]) -> str:
    """What the page says above the Explain button: how long this method with these settings
    took on this model before (:func:`kept_seconds`); "" when it never ran here."""
    if not model_id or not method_id:
        return ""
    seconds = kept_seconds(service, model_id, method_id,
                           collect_params(method_id, modality, values))
    if seconds is None:
        return ""
    took = "under a second" if seconds < 1 else f"about {seconds:.0f} s"
    return (f"*Expected: {took}" + ("" if service.loaded(model_id)
                                     else " after loading the model")
            + f", as long as {get_method(method_id).label} took on this model before with "
            "these settings.*")


def run_explain(service: Service, session: Session, modality: str, audio: str | None,
                image: str | None, model_id: str, method_id: str, seed: float, window: str | None,
                target: str | None, values: list[Any], progress=None):
    """Everything the page shows for one explanation."""
    path = input_path(modality, audio, image)
    if not method_id:
        raise ask("Choose a method first.", "No method chosen")
    params = collect_params(method_id, modality, values)
    report = paced_for(service, progress, model_id, method_id, params)
    expl = service.explain(session, path, model_id, method_id, params=params, seed=int(seed or 0),
                           window=parse_window(window),
                           target=None if target in (None, "", PREDICTED) else target,
                           progress=report)
    png, record, _ = service.export(session, expl)
    summary = (f"**{expl.method_label}** explaining **{expl.target_label}** · "
               f"{expl.seconds:.2f} s · {counted(expl.n_evaluations)}"
               + (f" · seed {expl.seed}" if expl.seed is not None else "")
               # the file: the explanation stays on the page when another one is chosen
               + f" · {file_label(path)}"
               + ("  \n**Untrained model: this explains random weights, not a verdict.**"
                  if expl.untrained else "")
               + (f"  \n**{expl.flat_note}**" if expl.flat else "")
               + focus_markdown(expl))
    readout = service.readout(session, path, expl)
    clips = list(readout.clips) if readout is not None else []
    clip_kept, clip_removed = (clips + [None, None])[:2]
    # the page shows the download itself: one figure drawn and encoded, which Gradio serves
    return (str(png), summary, service.record(expl), [str(png), str(record)],
            readout.figure if readout is not None else None, clip_kept, clip_removed,
            readout.text if readout is not None else "")


def run_report(service: Service, session: Session, modality: str, audio: str | None,
               image: str | None, model_id: str, method_id: str, seed: float, window: str | None,
               target: str | None, values: list[Any], progress=None) -> str:
    """The page's explanation as one self-contained HTML report; returns its path. The
    explanation comes from the session's cache when the page already shows it."""
    path = input_path(modality, audio, image)
    if not method_id:
        raise ask("Choose a method first.", "No method chosen")
    params = collect_params(method_id, modality, values)
    report = paced_for(service, progress, model_id, method_id, params)
    expl = service.explain(session, path, model_id, method_id, params=params,
                           seed=int(seed or 0), window=parse_window(window),
                           target=None if target in (None, "", PREDICTED) else target,
                           progress=report)
    return str(service.report(session, path, model_id, [expl]))


# --- layout ---------------------------------------------------------------------------------

def build(service: Service, header: dict[str, Any], session: gr.State) -> dict[str, Any]:
    with gr.Row():
        with gr.Column(scale=2):
            method = CurrentDropdown(label="Method (only those that apply to this model)",
                                     choices=[])
            details = gr.Markdown()
            hidden = gr.Markdown()
        with gr.Column(scale=1):
            seed = gr.Number(value=0, precision=0, label="Seed (LIME; SHAP with the kernel estimator)")
            first = get_modality(header["first_modality"]).window_label
            window = CurrentDropdown(label=first or "Window", choices=[AUTO_WINDOW],
                                     value=AUTO_WINDOW, visible=first is not None)
            target = CurrentDropdown(label="Explain which class", choices=[PREDICTED],
                                     value=PREDICTED)
    slots = param_slots()
    with gr.Row():
        controls = [control_for(s.param) for s in slots]
    expected = gr.Markdown()  # how long the method took here before: seen before Explain
    with gr.Row():
        explain_btn = gr.Button("Explain", variant="primary")
        cancel_btn = gr.Button("Cancel", variant="stop")
        report_btn = gr.Button("Download report")
    summary = gr.Markdown()
    figure = gr.Image(label="input | heatmap | overlay", type="numpy", interactive=False,
                      format=FIGURE_FORMAT)
    # The modality's extra views (audio: band / time profiles and two clips), shown only for a
    # modality that has them; the plot's own titles name its panels.
    with gr.Row(visible=get_modality(header["first_modality"]).has_readout) as audio_row:
        readouts = gr.Plot(label="attribution per frequency band and per time segment",
                           show_label=False, format=FIGURE_FORMAT)
        with gr.Column():
            clips_md = gr.Markdown()
            clip_kept = gr.Audio(label="important regions kept", interactive=False)
            clip_removed = gr.Audio(label="important regions removed", interactive=False)
    with gr.Row():
        downloads = gr.File(label="Download figure (PNG) and record (JSON)", file_count="multiple",
                            interactive=False)
        record = gr.JSON(label="Explanation record")
    report_file = gr.File(label="Report (one HTML file: figures, prediction, model card, record)",
                          interactive=False, visible=False)

    model = header["model"]

    @skip_stale
    @user_errors
    def on_model(model_id):
        choices, default, hidden_md = method_choices(service, model_id)
        labels = list(service.spec(model_id).labels) if model_id else []
        return (gr.update(choices=choices, value=default), hidden_md,
                gr.update(choices=[PREDICTED, *labels], value=PREDICTED))

    @skip_stale
    @user_errors
    def on_method(model_id, method_id):
        visible = slot_visibility(service, model_id, method_id)
        return [method_details_markdown(method_id) if method_id else "",
                *[gr.update(visible=v) for v in visible]]

    @user_errors
    def on_explain(sess, modality, audio, image, model_id, method_id, seed_v, window_v, target_v,
                   *values, progress=gr.Progress()):
        out = run_explain(service, sess, modality, audio, image, model_id, method_id, seed_v,
                          window_v, target_v, list(values), progress=throttled(progress))
        return (*out, gr.update(visible=out[4] is not None or out[5] is not None))

    @user_errors
    def on_report(sess, modality, audio, image, model_id, method_id, seed_v, window_v, target_v,
                  *values, progress=gr.Progress()):
        path = run_report(service, sess, modality, audio, image, model_id, method_id, seed_v,
                          window_v, target_v, list(values), progress=throttled(progress))
        return gr.update(value=path, visible=True)

    def on_cancel(sess):
        sess.cancel.set()
        gr.Info("Cancelling: the running explanation stops at its next batch.")

    @skip_stale
    def on_expected(model_id, method_id, modality, *values):
        try:
            return expected_text(service, model_id, method_id, modality, list(values))
        except (XAIError, OSError):  # a hint: the Explain button reports what is wrong
            return ""

    expecting = ([model, method, header["modality"], *controls], [expected])
    # another model may keep the same method, which then fires no change of its own: its
    # details, controls and time follow the model (and a method change the page sent before
    # the model changed was skipped as stale)
    model.change(on_model, [model], [method, hidden, target], api_visibility="private").then(
        on_method, [model, method], [details, *controls], api_visibility="private").then(
        on_expected, *expecting, show_progress="hidden", api_visibility="private")
    method.change(on_method, [model, method], [details, *controls], api_visibility="private")
    event = explain_btn.click(
        on_explain,
        [session, header["modality"], header["audio"], header["image"], model, method, seed,
         window, target, *controls],
        [figure, summary, record, downloads, readouts, clip_kept, clip_removed, clips_md, audio_row],
        show_progress_on=[figure], api_visibility="private")  # one bar, not one per output
    event.then(on_expected, *expecting, show_progress="hidden", api_visibility="private")
    for changed in (method, *controls):
        changed.change(on_expected, *expecting, show_progress="hidden", api_visibility="private")
    cancel_btn.click(on_cancel, [session], None, cancels=[event], queue=False,
                     api_visibility="private")
    report_btn.click(
        on_report,
        [session, header["modality"], header["audio"], header["image"], model, method, seed,
         window, target, *controls],
        [report_file], api_visibility="private")
    return {"report": report_btn, "report_file": report_file, "method": method, "window": window, "target": target, "figure": figure,
            "summary": summary, "explain": explain_btn, "on_model": on_model,
            "hidden": hidden, "readout_row": audio_row, "on_expected": on_expected,
            "expecting": expecting}
