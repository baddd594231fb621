"""explain-batch on a local Ray (2 CPUs, 2 workers) equals the in-process run bit for bit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import HAS_TORCH, ROOT, TINY_MODELS, chest_like, write_config

pytestmark = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    from PIL import Image

    data = tmp_path / "img"
    data.mkdir()
    for i in range(4):
        Image.fromarray((chest_like(seed=i) * 255).astype(np.uint8), mode="L").save(
            data / f"c{i}.png")
    (data / "broken.png").write_text("not an image")
    return data


def _args(folder: Path, out: Path, config: Path, *extra: str) -> list[str]:
    return ["explain-batch", str(folder), "--model", "tiny-torch-xray", "--method", "gradcam",
            "--method", "lime", "--param", "num_samples=50", "--seed", "5", "--metrics",
            "faithfulness", "--out", str(out), "--config", str(config), "--quiet", *extra]


def test_local_ray_run_equals_the_in_process_run(folder, tmp_path):
    pytest.importorskip("ray")
    from xai_platform.batch import read_index
    from xai_platform.cli import main

    config = write_config(tmp_path / "tiny.yaml", TINY_MODELS)
    here, there = tmp_path / "in-process", tmp_path / "ray"
    assert main(_args(folder, here, config)) == 0
    assert main(_args(folder, there, config, "--ray", "auto", "--ray-workers", "2")) == 0
    a = {(r["input"], r["method"]): r for r in read_index(here / "index.parquet")}
    b = {(r["input"], r["method"]): r for r in read_index(there / "index.parquet")}
    assert a.keys() == b.keys() and len(a) == 10
    order = [(r["input"], r["method"]) for r in read_index(there / "index.parquet")]
    assert order == list(a)  # the inputs' order, whatever order the workers finished in
    for key, r in a.items():
        s = b[key]
        assert r["status"] == s["status"]
        if r["status"] != "ok":  # retried, then reported with its error
            assert key[0] == "broken.png" and s["error"] == r["error"]
            continue
        assert np.array_equal(np.load(r["heatmap"]), np.load(s["heatmap"])), key
        for column in ("insertion_auc", "deletion_auc", "score", "n_evaluations", "prediction"):
            assert r[column] == s[column], (key, column)
    # resuming on Ray reuses everything the run finished
    assert main(_args(folder, there, config, "--ray", "auto", "--ray-workers", "1")) == 0
    again = read_index(there / "index.parquet")
    assert all(r["resumed"] for r in again if r["status"] == "ok")


def test_without_ray_nothing_of_ray_is_imported(folder, tmp_path):
    config = write_config(tmp_path / "tiny.yaml", TINY_MODELS)
    code = ("import sys; from xai_platform.cli import main; "
            f"rc = main({_args(folder, tmp_path / 'out', config)!r}); "
            "print(rc, sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "0 []"


def test_evaluate_on_ray_equals_evaluate_in_process(folder, tmp_path):
    pytest.importorskip("ray")
    import csv

    from xai_platform.cli import main

    config = write_config(tmp_path / "tiny.yaml", TINY_MODELS)
    tables = []
    for name, extra in (("here", []), ("ray", ["--ray", "auto", "--ray-workers", "2"])):
        out = tmp_path / name
        assert main(["evaluate", "--model", "tiny-torch-xray", "--data", str(folder),
                     "--method", "gradcam", "--method", "lime", "--metrics", "faithfulness",
                     "randomization", "--out", str(out), "--config", str(config), "--quiet",
                     *extra]) == 0
        with (out / "metrics.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        tables.append([{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows])
        report = (out / "report.md").read_text()
        assert "broken.png" in report  # skipped, and named
    assert len(tables[0]) == 8 and [list(r) for r in tables[0]] == [list(r) for r in tables[1]]
    # Equal up to float rounding: a Ray worker runs its BLAS on other threads, and the LIME
    # maps' SSIM against the randomised model moved in the 5th digit on one CPU.
    for here, there in zip(*tables):
        for key, value in here.items():
            if _is_number(value):
                assert float(there[key]) == pytest.approx(float(value), rel=1e-3, abs=1e-6,
                                                           nan_ok=True), key
            else:
                assert there[key] == value, key


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
