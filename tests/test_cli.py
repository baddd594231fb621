"""The CLI end to end, in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, needs_tf, needs_torch


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xai_platform", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_models_json_lists_status_and_methods(tiny_config_path):
    result = run_cli("models", "--json", "--config", str(tiny_config_path))
    assert result.returncode == 0, result.stderr
    models = {m["id"]: m for m in json.loads(result.stdout)["models"]}
    assert {"audio-cnn", "xray-densenet121", "tiny-keras-audio"} <= set(models)
    for m in models.values():
        assert m["status"] in ("ready", "untrained: no trained weights: outputs are not a verdict") \
            or m["status"].startswith("unavailable: ")
        assert m["framework"] in ("torch", "keras") and m["modality"] in ("audio", "xray")
    assert "gradcam" in models["tiny-torch-audio"]["methods"]


@pytest.mark.parametrize("model_id, fixture", [
    pytest.param("tiny-torch-audio", "wav_file", marks=needs_torch),
    pytest.param("tiny-keras-audio", "wav_file", marks=needs_tf),
    pytest.param("tiny-torch-xray", "png_file", marks=needs_torch),
    pytest.param("tiny-keras-xray", "png_file", marks=needs_tf),
])
def test_explain_json_writes_figure_and_heatmap(request, tmp_path, tiny_config_path, model_id, fixture):
    source = request.getfixturevalue(fixture)
    out = tmp_path / "out"
    result = run_cli("explain", str(source), "--model", model_id, "--method", "gradcam",
                     "--method", "lime", "--param", "num_samples=100", "--out", str(out),
                     "--seed", "3", "--json", "--config", str(tiny_config_path))
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)["results"]
    assert entry["input"] == str(source) and entry["model"] == model_id
    probs = entry["prediction"]["probabilities"]
    assert set(probs) == ({"real", "fake"} if "audio" in model_id else {"normal", "lesion"})
    assert abs(sum(probs.values()) - 1) < 1e-4
    assert entry["prediction"]["label"] in probs and entry["prediction"]["untrained"] is True
    methods = [e["method"] for e in entry["explanations"]]
    assert methods == ["gradcam", "lime"]
    for e in entry["explanations"]:
        assert {"method", "figure", "heatmap", "seconds", "params", "seed"} <= set(e)
        heatmap = np.load(e["heatmap"])
        assert heatmap.ndim == 2 and np.isfinite(heatmap).all()
        with open(e["figure"], "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    lime = entry["explanations"][1]
    assert lime["seed"] == 3 and lime["params"]["num_samples"] == 100
    if "audio" in model_id:  # explanations you can listen to, each re-scored by the model
        listening = lime["listening"]
        for key in ("kept", "removed"):
            assert listening[key].endswith(f"_{key}.wav")
            import soundfile as sf

            assert sf.info(listening[key]).samplerate == 8000
        assert 0 <= listening["score_kept"] <= 1 and 0 <= listening["score_removed"] <= 1


@needs_torch
def test_explain_with_metrics_ranks_the_methods_as_the_comparison_page(tmp_path,
                                                                        tiny_config_path,
                                                                        png_file):
    """`explain --metrics`: each explanation's scorecard, and per input which maps to trust,
    the methods ranked and how far the maps agree; the printout names a failing check."""
    args = ["explain", str(png_file), "--model", "tiny-torch-xray", "--method", "gradcam",
            "--method", "saliency", "--metrics", "faithfulness", "randomization",
            "--out", str(tmp_path / "out"), "--config", str(tiny_config_path)]
    result = run_cli(*args, "--json", "--report")
    assert result.returncode == 0, result.stderr
    def not_json(constant):
        raise AssertionError(f"{constant} is not JSON")

    (entry,) = json.loads(result.stdout, parse_constant=not_json)["results"]
    cards = {e["method"]: e["scorecard"] for e in entry["explanations"]}
    assert set(cards) == {"gradcam", "saliency"}
    assert all({"insertion_auc", "deletion_auc", "randomization_rho"} <= set(c["values"])
               for c in cards.values())
    comparison = entry["comparison"]
    ranking = comparison["ranking"]
    assert sorted(r["method"] for r in ranking) == ["gradcam", "saliency"]
    assert [r["rank"] for r in ranking] == sorted(r["rank"] for r in ranking)
    assert all(r["passes"] == ("fails_randomization" not in cards[r["method"]]["flags"]
                               and "chance_order" not in cards[r["method"]]["flags"])
               for r in ranking)
    assert comparison["trust"] and len(comparison["agreement"]["spearman"]) == 2
    report = open(entry["report"], encoding="utf-8").read()
    assert "Mean rank" in report and comparison["trust"] in report  # the ranking too

    printed = run_cli(*args)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.count("scores: Insertion AUC") == 2
    assert comparison["trust"] in printed.stdout
    for r in ranking:
        label = {"gradcam": "Grad-CAM", "saliency": "Gradient saliency"}[r["method"]]
        line = next(x for x in printed.stdout.splitlines() if f"{r['rank']}. {label}:" in x)
        assert ("(fails the randomisation check" in line) == \
            ("fails_randomization" in cards[r["method"]]["flags"])
    without = run_cli(*args[:8], "--out", str(tmp_path / "plain"), "--json",
                      "--config", str(tiny_config_path))
    (plain,) = json.loads(without.stdout)["results"]
    assert "comparison" not in plain and "scorecard" not in plain["explanations"][0]


@pytest.mark.parametrize("args, message", [
    (["explain", "missing.wav", "--model", "tiny-torch-audio"], "missing.wav: file not found"),
    (["explain", "README.md", "--model", "tiny-torch-audio"], "README.md"),
    (["explain", "x.wav", "--model", "nope"], "unknown model 'nope'"),
    (["explain", "x.wav", "--model", "tiny-torch-audio", "--method", "magic"],
     "unknown method 'magic'"),
    (["models", "--config", "/does/not/exist.yaml"], "does not exist"),
    # a typo of a parameter's name ran the default unnoticed
    (["explain", "x.wav", "--model", "tiny-torch-audio", "--method", "lime", "--method",
      "gradcam", "--param", "nsamples=100"],
     "no chosen method takes a parameter 'nsamples' for audio inputs (LIME: num_samples"),
    (["explain-batch", "x.wav", "--model", "tiny-torch-audio", "--method", "lime", "--param",
      "nsamples=100", "--out", "/tmp/never-written"], "no chosen method takes a parameter"),
    (["check-model"], "name the model to check (--model ID"),
    # out of range: said before anything loads or runs, as explain-batch says it
    (["explain", "x.wav", "--model", "tiny-torch-audio", "--method", "lime", "--param",
      "num_samples=5"], "LIME: parameter 'num_samples' must lie in [50, 10000], got 5"),
])
def test_bad_input_exits_non_zero_with_one_line(tiny_config_path, args, message):
    if "--config" not in args:
        args = [*args, "--config", str(tiny_config_path)]
    result = run_cli(*args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_check_model_checks_a_configured_model_by_its_id(tiny_config_path):
    result = run_cli("check-model", "--model", "tiny-torch-xray", "--config",
                     str(tiny_config_path))
    assert result.returncode == 0, result.stderr
    assert "model 'tiny-torch-xray' (torch, xray): OK" in result.stdout


@needs_torch
@needs_tf
def test_bench_prints_cost_per_method_with_library_baselines(tiny_config_path):
    """The benchmark's table: every method and the libraries called the usual way, with model
    evaluations and the ratio to plain forward passes (figures, not assertions on speed)."""
    args = ("bench", "--config", str(tiny_config_path), "--model", "tiny-torch-xray",
            "--model", "tiny-keras-audio", "--baselines", "--repeats", "1", "--lime-samples", "60",
            "--shap-evals", "40", "--ig-steps", "4")
    table = run_cli(*args)
    assert table.returncode == 0, table.stderr
    assert "%|" not in table.stdout + table.stderr  # no library progress bars in the table
    for name in ("gradcam", "integrated_gradients", "lime (lime_image, batch 10, quickshift)",
                 "shap (KernelExplainer)", "gradcam (pytorch-grad-cam)"):
        assert name in table.stdout
    report = json.loads(run_cli(*args, "--json").stdout)
    rows = report["rows"]
    by = {(r["model"], r["method"]): r for r in rows}
    # the total is the methods' own rows added up, the library baselines left out
    own = [r for r in rows if r["model"] == "tiny-torch-xray" and "(" not in r["method"]]
    total = report["totals"]["tiny-torch-xray"]
    assert sorted(total["methods"]) == sorted(r["method"] for r in own) and len(own) == 6
    assert total["evaluations"] == sum(r["evaluations"] for r in own)
    assert total["seconds"] == pytest.approx(sum(r["seconds"] for r in own))
    assert "tiny-torch-xray: 6 methods in" in table.stderr
    assert by[("tiny-torch-xray", "lime")]["evaluations"] == 60
    assert by[("tiny-keras-audio", "gradcam")]["evaluations"] == 1
    assert by[("tiny-torch-xray", "integrated_gradients")]["evaluations"] >= 4
    assert all(r["seconds"] > 0 and r["forward_seconds"] > 0 and np.isfinite(r["ratio"])
               for r in rows)


def test_cli_is_quiet_by_default(tmp_path):
    """No framework or decoder chatter: a Keras model explains with nothing on stderr, and a
    damaged MP3 gets one line, without libmpg123's notes."""
    import soundfile as sf

    from conftest import TINY_MODELS, tone, write_config

    pytest.importorskip("tensorflow")
    config = write_config(tmp_path / "c.yaml", TINY_MODELS)
    wav = tmp_path / "v.wav"
    sf.write(wav, tone(0.6, sr=8000), 8000)
    damaged = tmp_path / "bad.mp3"
    damaged.write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 20)
    base = [sys.executable, "-m", "xai_platform", "explain", "--config", str(config),
            "--out", str(tmp_path / "out"), "--quiet"]
    ok = subprocess.run(base + [str(wav), "--model", "tiny-keras-audio", "--method", "gradcam"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr
    bad = subprocess.run(base + [str(damaged), "--model", "tiny-torch-audio"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert bad.stderr.startswith("error:") and "Note:" not in bad.stderr


@needs_torch
def test_cli_json_carries_the_record_the_api_and_the_download_carry(tmp_path, png_file, capsys):
    """One service under every face: the CLI's record has every field of the service's record
    (the API's and the downloaded one): weights hash, library versions, seed, parameters."""
    from conftest import TINY_MODELS, write_config
    from xai_platform.cli import main
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.service import Service, Session

    config = write_config(tmp_path / "c.yaml", TINY_MODELS)
    assert main(["explain", str(png_file), "--model", "tiny-torch-xray", "--method", "lime",
                 "--param", "num_samples=50", "--config", str(config), "--out",
                 str(tmp_path / "out"), "--json", "--quiet"]) == 0
    cli = json.loads(capsys.readouterr().out)["results"][0]["explanations"][0]
    service = Service(ModelManager(load_config([config], base=None), device="cpu"))
    session = Session()
    try:
        expl = service.explain(session, png_file, "tiny-torch-xray", "lime",
                               params={"num_samples": 50})
        api = service.record(expl)
        download = json.loads(service.export(session, expl)[1].read_text())
    finally:
        session.close()
    assert set(api) <= set(cli) and set(api) <= set(download)
    for key in ("weights_sha256", "libraries", "seed", "params", "seconds", "model_evaluations"):
        assert key in api
    assert cli["params"] == api["params"] and cli["seed"] == api["seed"] == 0
