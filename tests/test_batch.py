"""explain-batch (resume, the index, failed inputs) and the HTML reports, on the tiny models."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import HAS_TORCH, TINY_MODELS, chest_like, write_config

pytestmark = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")

METHODS = ("gradcam", "lime")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Three chest-like PNGs, a lesion mask for one, and a CSV naming them plus a missing file."""
    from PIL import Image

    folder = tmp_path / "data"
    (folder / "img").mkdir(parents=True)
    for i in range(3):
        Image.fromarray((chest_like(seed=i) * 255).astype(np.uint8), mode="L").save(
            folder / "img" / f"c{i}.png")
    mask = np.zeros((96, 96), np.uint8)
    mask[30:50, 55:75] = 255
    Image.fromarray(mask, mode="L").save(folder / "img" / "c0.mask.png")
    with (folder / "list.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "mask"])
        w.writerow(["img/c0.png", "lesion", "img/c0.mask.png"])
        w.writerow(["img/c1.png", "normal", ""])
        w.writerow(["img/missing.png", "normal", ""])
        w.writerow(["img/c2.png", "lesion", ""])
    return folder


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "tiny.yaml", TINY_MODELS)


def batch_args(inputs: Path, out: Path, config: Path, *extra: str) -> list[str]:
    args = ["explain-batch", str(inputs), "--model", "tiny-torch-xray", "--out", str(out),
            "--config", str(config), "--param", "num_samples=50", "--seed", "7", *extra]
    for m in METHODS:
        args += ["--method", m]
    return args


def index(out: Path) -> dict[tuple[str, str], dict]:
    from xai_platform.batch import read_index

    return {(r["input"], r["method"]): r for r in read_index(out / "index.parquet")}


def test_batch_writes_index_records_and_resumes_after_a_lost_record(dataset, config, tmp_path,
                                                                    capsys):
    from xai_platform.cli import main

    out = tmp_path / "out"
    assert main(batch_args(dataset / "list.csv", out, config, "--metrics", "faithfulness")) == 0
    printed = capsys.readouterr()
    assert "inputs/s" in printed.err and "ETA" in printed.err  # the progress line
    assert "6 computed, 0 reused" in printed.out and "2 failed" in printed.out
    rows = index(out)
    assert len(rows) == 8  # 4 inputs x 2 methods, the missing one included
    with (out / "index.csv").open(newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 8
    for (name, method), r in rows.items():
        if name == "img/missing.png":
            assert r["status"] == "error" and "file not found" in r["error"]
            assert "\n" not in r["error"]
            continue
        assert r["status"] == "ok" and r["resumed"] is False and r["error"] is None
        assert r["prediction"] in ("normal", "lesion") and r["untrained"] is True
        assert r["withheld"] is False and r["confirmed"] is True and r["explain_seconds"] > 0
        assert np.isfinite(r["insertion_auc"]) and np.isfinite(r["deletion_auc"])
        assert json.loads(r["params"])["num_samples"] == 50 if method == "lime" else True
        for key in ("figure", "heatmap", "record"):
            assert Path(r[key]).is_file()
        record = json.loads(Path(r["record"]).read_text())
        assert record["batch"]["fingerprint"]["method"] == method
        assert {"weights_sha256", "libraries", "seed", "params"} <= set(record)
    # the mask column gave localisation scores to c0 only
    assert np.isfinite(rows["img/c0.png", "gradcam"]["mass_inside"])
    assert rows["img/c1.png", "gradcam"].get("mass_inside") is None
    assert rows["img/c0.png", "lime"]["correct"] is (rows["img/c0.png", "lime"]["prediction"]
                                                     == "lesion")

    # A kill that lost one record: the re-run recomputes that one and touches nothing else.
    lost = Path(rows["img/c1.png", "lime"]["record"])
    kept = Path(rows["img/c2.png", "gradcam"]["record"])
    before = np.load(rows["img/c1.png", "lime"]["heatmap"])
    stamp = kept.stat().st_mtime_ns
    lost.unlink()
    assert main(batch_args(dataset / "list.csv", out, config, "--metrics", "faithfulness",
                           "--quiet")) == 0
    again = index(out)
    assert again["img/c1.png", "lime"]["resumed"] is False and lost.is_file()
    assert all(r["resumed"] for k, r in again.items()
               if k != ("img/c1.png", "lime") and r["status"] == "ok")
    assert again["img/missing.png", "gradcam"]["status"] == "error"  # tried again, still missing
    assert kept.stat().st_mtime_ns == stamp
    # the same seed gives the same map, bit for bit
    assert np.array_equal(np.load(again["img/c1.png", "lime"]["heatmap"]), before)

    # Other parameters are another computation: nothing is reused for LIME.
    assert main(batch_args(dataset / "list.csv", out, config, "--metrics", "faithfulness",
                           "--quiet", "--param", "kernel_width=0.5")) == 0
    third = index(out)
    assert not any(r["resumed"] for (_, m), r in third.items() if m == "lime")
    assert all(r["resumed"] for (_, m), r in third.items() if m == "gradcam" and r["status"] == "ok")


def test_an_interrupted_run_keeps_what_finished(dataset, manager, tmp_path):
    """Ctrl-C after two inputs: the index of those two is written, and the next run reuses
    them and computes the rest."""
    from xai_platform.batch import BatchSettings, list_batch_inputs, run_batch
    from xai_platform.service import Service

    service = Service(manager)
    items = list_batch_inputs(dataset / "img", "xray")
    assert [i.name for i in items] == ["c0.png", "c1.png", "c2.png"]  # the mask is no input
    settings = BatchSettings(model="tiny-torch-xray", methods=("gradcam",), seed=0)
    out = tmp_path / "out"

    def stop_after_two(done, total, computed, name, status):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(service, items, settings, out=out, on_item=stop_after_two)
    assert sorted(r["input"] for r in index(out).values()) == ["c0.png", "c1.png"]
    assert not list((out / "items").glob(".*.part"))  # no half-written file left
    result = run_batch(service, items, settings, out=out)
    assert (result.computed, result.resumed, result.failed) == (1, 2, 0)


def test_a_failing_input_is_reported_and_the_run_goes_on(dataset, config, tmp_path, capsys):
    from xai_platform.cli import main

    (dataset / "img" / "broken.png").write_text("not an image")
    out = tmp_path / "out"
    assert main(["explain-batch", str(dataset / "img"), "--model", "tiny-torch-xray",
                 "--method", "gradcam", "--out", str(out), "--config", str(config)]) == 0
    rows = index(out)
    broken = rows["broken.png", "gradcam"]
    assert broken["status"] == "error" and "not a PNG, JPEG or DICOM" in broken["error"]
    assert all(r["status"] == "ok" for k, r in rows.items() if k[0] != "broken.png")
    assert "failed:  broken.png (gradcam)" in capsys.readouterr().out


def test_quiet_batch_prints_nothing_and_a_glob_works(dataset, config, tmp_path, capsys):
    from xai_platform.cli import main

    out = tmp_path / "out"
    assert main(["explain-batch", str(dataset / "img" / "c[01].png"), "--model",
                 "tiny-torch-xray", "--method", "gradcam", "--out", str(out), "--config",
                 str(config), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == ""
    assert len(index(out)) == 2


def test_output_inside_the_input_folder_is_never_an_input(dataset, config):
    from xai_platform.cli import main

    out = dataset / "img" / "out"  # its figures are PNGs, like the inputs
    args = ["explain-batch", str(dataset / "img"), "--model", "tiny-torch-xray", "--method",
            "gradcam", "--out", str(out), "--config", str(config), "--quiet"]
    assert main(args) == 0 and main(args) == 0
    rows = index(out)
    assert sorted(name for name, _ in rows) == ["c0.png", "c1.png", "c2.png"]
    assert all(r["resumed"] for r in rows.values())


def test_bad_inputs_argument_is_one_line(config, tmp_path, capsys):
    from xai_platform.cli import main

    assert main(["explain-batch", str(tmp_path / "nothing-*.png"), "--model", "tiny-torch-xray",
                 "--out", str(tmp_path / "out"), "--config", str(config)]) == 2
    assert "no folder, CSV or xray files" in capsys.readouterr().err


# --- reports -------------------------------------------------------------------------------

EXTERNAL = re.compile(r"""(src|href|action|poster|data)\s*=\s*["']?\s*(https?:)?//""", re.I)


def assert_self_contained(text: str) -> None:
    assert text.startswith("<!DOCTYPE html>")
    assert not EXTERNAL.search(text), EXTERNAL.search(text)
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text.lower() and "url(" not in text
    assert "default-src 'none'" in text  # the policy forbids any fetch
    assert "data:image/png;base64," in text


def test_explain_report_is_self_contained_with_prediction_and_record(dataset, config, tmp_path,
                                                                     capsys):
    from xai_platform.cli import main

    out = tmp_path / "out"
    assert main(["explain", str(dataset / "img" / "c0.png"), "--model", "tiny-torch-xray",
                 "--method", "gradcam", "--method", "integrated_gradients", "--out", str(out),
                 "--config", str(config), "--report", "--json", "--quiet"]) == 0
    entry = json.loads(capsys.readouterr().out)["results"][0]
    text = Path(entry["report"]).read_text()
    assert_self_contained(text)
    verdict = entry["prediction"]["verdict"]
    assert verdict.split(";")[0] in text.replace("&#x27;", "'")  # the prediction
    assert "Decision threshold" in text and "Calibration" in text
    assert "Never trained on" in text and "No model card" in text
    assert "Agreement between methods" in text  # two methods: the matrix
    for e in entry["explanations"]:  # each record, in full
        assert f"&quot;method&quot;: &quot;{e['method']}&quot;" in text
    assert "&quot;weights_sha256&quot;" in text and "&quot;libraries&quot;" in text


def test_report_of_a_model_with_a_card_names_what_it_never_saw(tmp_path):
    """The shipped audio CNN's card: training languages, test figures, unseen languages and
    generators (no model is run: the card alone)."""
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.reports import card_section, never_trained_on

    manager = ModelManager(load_config(), device="cpu")
    card = manager.card("audio-cnn")
    if card is None:
        pytest.skip("the shipped audio-cnn card is not there")
    spec = manager.spec("audio-cnn")
    gaps = never_trained_on(spec, card)
    assert any("never heard in training" in g and "de" in g for g in gaps)
    assert any("espeak-ng" in g for g in gaps)
    text = card_section(spec, card, weights_sha256="abc")
    assert "Test figures" in text and "ROC AUC" in text and "data/audio_corpus" in text


def test_batch_summary_report(dataset, config, tmp_path, capsys):
    from xai_platform.cli import main

    (dataset / "img" / "broken.png").write_text("not an image")
    out = tmp_path / "out"
    assert main(["explain-batch", str(dataset / "img"), "--model", "tiny-torch-xray",
                 "--method", "gradcam", "--method", "integrated_gradients", "--metrics",
                 "faithfulness", "--out", str(out), "--config", str(config), "--report",
                 "--quiet"]) == 0
    text = (out / "report.html").read_text()
    assert_self_contained(text)
    assert "Scores per method" in text and "Insertion AUC" in text
    assert "the 3 worst by" in text  # worst cases, with their figures
    assert text.count("data:image/png;base64,") >= 2 * 3 + 4
    assert "Failed (2)" in text and "broken.png" in text
    assert "explain-batch" in text and "&quot;seed&quot;: 0" in text  # what reproduces it


def test_page_report_buttons_return_a_file(manager, png_file):
    from xai_platform.service import Service, Session
    from xai_platform.ui.classification import param_slots, run_report
    from xai_platform.ui.comparison import comparison_report

    service, session = Service(manager), Session()
    try:
        values = [s.param.default for s in param_slots()]
        path = run_report(service, session, "xray", None, str(png_file), "tiny-torch-xray",
                          "gradcam", 0, None, None, values)
        text = Path(path).read_text()
        assert Path(path).parent == session.dir and path.endswith(".html")
        assert_self_contained(text)
        assert "Grad-CAM" in text and "Agreement between methods" not in text
        path = comparison_report(service, session, "xray", None, str(png_file),
                                 "tiny-torch-xray", ["gradcam", "saliency"], 0,
                                 metrics=("faithfulness",))
        text = Path(path).read_text()
        assert_self_contained(text)
        assert "Agreement between methods" in text and "Insertion AUC" in text
    finally:
        session.close()


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_report_renders_in_chromium_without_any_request(manager, png_file, tmp_path):
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    from xai_platform.service import Service, Session

    service, session = Service(manager), Session()
    try:
        explanations = [service.explain(session, png_file, "tiny-torch-xray", m)
                        for m in ("gradcam", "saliency")]
        report = service.report(session, png_file, "tiny-torch-xray", explanations)
        requests = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri())
            page.wait_for_load_state("load")
            loaded = page.evaluate("[...document.images].map(i => i.complete && i.naturalWidth)")
            heading = page.inner_text("h1")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            browser.close()
        # the page itself, then only data: URIs; nothing over the network
        assert requests[0] == report.as_uri()
        assert all(u.startswith("data:") for u in requests[1:]), requests
        assert len(loaded) >= 4 and all(w and w > 0 for w in loaded)  # every figure decoded
        assert "Tiny torch X-ray" in heading
    finally:
        session.close()
