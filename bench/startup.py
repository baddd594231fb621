"""How long until the page is up after `python app.py`, against the floor Gradio sets, and
where the time goes.

    .venv/bin/python bench/startup.py [--runs 5] [--port 7897] [--before REV]

Each run starts a fresh process and polls http://127.0.0.1:PORT/ until it answers 200 (the
page a browser gets). Rows, launched in turn (run 1 of every row, then run 2, ...) so that the
load of other processes drifts over all of them alike:

* `import gradio`: a bare `python -c "import gradio"`, the import alone;
* a minimal Gradio page: import Gradio, one Markdown in a `gr.Blocks`, launch: the floor for
  any page Gradio serves (its import plus building an app plus its server start);
* both again with Gradio's `.pyi` regeneration skipped, as `xai_platform.ui` imports Gradio
  (:mod:`xai_platform.ui.gradio_import`): the floor for our page;
* `app.py --no-verify` at REV (``--before``, exported with `git archive` to a temporary folder),
  and in this checkout;
* `app.py` in this checkout as a user starts it (the target-layer checks start in the
  background once the page is served).

Then a second, in-process pass times the phases of this checkout: our package and config,
importing Gradio, building the page, launching the server. Prints the seconds and the load
average before and after. Start-up is almost all CPU-bound imports, so the load of other
processes adds one for one: compare rows of the same run, not seconds across days.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PHASES = r"""
import sys, time
t0 = time.perf_counter()
marks = []
def lap(name): marks.append((name, time.perf_counter()))
from xai_platform.config import load_config
from xai_platform.models import ModelManager
config = load_config([]); manager = ModelManager(config); lap("our package and config")
import xai_platform.ui, gradio; lap("import gradio")  # as app.py does: stubs skipped
from xai_platform.ui.app import build_app, launch
demo = build_app(manager, config.app); lap("build the page")
launch(demo, host="127.0.0.1", port=int(sys.argv[1]), share=False, auth=None, concurrency=1,
       prevent_thread_lock=True); lap("launch the server")
heavy = [m for m in ("torch", "tensorflow", "matplotlib", "librosa", "cv2", "onnxruntime")
         if m in sys.modules]
demo.close()
prev = t0
for name, t in marks:
    print(f"PHASE {name}\t{t - prev:.3f}")
    prev = t
print("HEAVY " + (" ".join(heavy) or "-"))
"""

MINIMAL = r"""
import sys
if sys.argv[2] == "skip":
    import xai_platform.ui  # skips Gradio's .pyi regeneration (xai_platform/ui/gradio_import.py)
import gradio as gr
with gr.Blocks() as demo:
    gr.Markdown("minimal")
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), prevent_thread_lock=True)
demo.block_thread()
"""


def _env(root: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(root))


def page_up(cmd: list[str], *, cwd: Path, port: int, timeout: float = 120.0) -> float:
    """Seconds from starting ``cmd`` to the first 200 on http://127.0.0.1:PORT/."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(cwd), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode} in {cwd}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"the page did not come up within {timeout:.0f} s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def import_time(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(ROOT), check=True)
    return time.perf_counter() - t0


def phases(port: int) -> tuple[dict[str, float], str]:
    out = subprocess.run([sys.executable, "-c", PHASES, str(port)], cwd=ROOT, env=_env(ROOT),
                         capture_output=True, text=True, timeout=300, check=True).stdout
    ph = {line.split("\t")[0][6:]: float(line.split("\t")[1])
          for line in out.splitlines() if line.startswith("PHASE ")}
    heavy = next((line[6:] for line in out.splitlines() if line.startswith("HEAVY ")), "?")
    return ph, heavy


def export(rev: str, dest: Path) -> None:
    """The tree of ``rev`` (a commit, branch or tag of this repository) into ``dest``."""
    data = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT, check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")


def _line(name: str, values: list[float]) -> str:
    return (f"  {name:<40} median {statistics.median(values):5.2f} s   "
            f"min {min(values):5.2f}   runs: {', '.join(f'{v:.2f}' for v in values)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--port", type=int, default=7897)
    p.add_argument("--before", metavar="REV", default=None,
                   help="also launch app.py as it was at this commit or branch (e.g. main)")
    args = p.parse_args(argv)
    app = [sys.executable, "app.py", "--port", str(args.port)]
    with tempfile.TemporaryDirectory(prefix="startup-before-") as tmp:
        minimal = [sys.executable, "-c", MINIMAL, str(args.port)]
        rows: dict[str, tuple] = {
            "python -c 'import gradio'": (import_time, "import gradio"),
            "  same, Gradio's .pyi rewrite skipped": (import_time,
                                                     "import xai_platform.ui, gradio"),
            "minimal Gradio page": (page_up, [*minimal, "gradio"]),
            "  same, .pyi rewrite skipped (floor)": (page_up, [*minimal, "skip"]),
        }
        if args.before:
            export(args.before, Path(tmp))
            rows[f"app.py --no-verify at {args.before}"] = (
                page_up, [*app, "--no-verify"], Path(tmp))
        rows["app.py --no-verify (this checkout)"] = (page_up, [*app, "--no-verify"])
        rows["app.py, checks in background (this)"] = (page_up, app)
        results: dict[str, list[float]] = {name: [] for name in rows}
        load_before = os.getloadavg()
        for _ in range(args.runs):
            for name, (fn, what, *where) in rows.items():
                if fn is import_time:
                    results[name].append(fn(what))
                else:
                    results[name].append(fn(what, cwd=where[0] if where else ROOT,
                                            port=args.port))
        load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; "
          f"after: {', '.join(f'{x:.2f}' for x in load_after)}; {os.cpu_count()} cores")
    print(f"seconds from launch to the page answering 200 ({args.runs} runs each, in turn):")
    for name, values in results.items():
        print(_line(name, values))
    ph, heavy = phases(args.port)
    total = sum(ph.values())
    print("phases of this checkout, in one process:")
    for name, s in ph.items():
        print(f"  {name:<24} {s:6.2f} s  {s / total:6.1%}")
    print(f"  {'in-process total':<24} {total:6.2f} s")
    print(f"  frameworks imported before the page is served: {heavy}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
