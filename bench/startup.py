"""How long until the page is up after `python app.py`, and where the time goes.

    .venv/bin/python bench/startup.py [--runs 3] [--port 7897]

Each run starts a fresh `python app.py` and polls http://127.0.0.1:PORT/ until it answers 200
(the page a browser gets); a second, in-process pass times the phases: importing our package,
importing Gradio, building the Blocks, launching the server. Prints the seconds and each
phase's share of the total, measured in the same run. Run it on an idle machine: start-up is
almost all CPU-bound imports, so the load of other processes adds one for one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
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
import gradio; lap("import gradio")
from xai_platform.ui.app import build_app, launch
demo = build_app(manager, config.app); lap("build the page")
launch(demo, host="127.0.0.1", port=int(sys.argv[1]), share=False, auth=None, concurrency=1,
       prevent_thread_lock=True); lap("launch the server")
demo.close()
prev = t0
for name, t in marks:
    print(f"PHASE {name}\t{t - prev:.3f}")
    prev = t
"""


def page_up(port: int, timeout: float = 120.0) -> float:
    """Seconds from starting app.py to the first 200 on /."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--no-verify"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t0 < timeout:
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


def phases(port: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", PHASES, str(port)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    return {line.split("\t")[0][6:]: float(line.split("\t")[1])
            for line in out.splitlines() if line.startswith("PHASE ")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--port", type=int, default=7897)
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    ups = [page_up(args.port) for _ in range(args.runs)]
    print(f"load average before: {load:.2f} on {os.cpu_count()} cores")
    print(f"page up after launch: median {statistics.median(ups):.2f} s "
          f"(runs: {', '.join(f'{u:.2f}' for u in ups)})")
    ph = phases(args.port)
    total = sum(ph.values())
    for name, s in ph.items():
        print(f"  {name:<24} {s:6.2f} s  {s / total:6.1%}")
    print(f"  {'in-process total':<24} {total:6.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
