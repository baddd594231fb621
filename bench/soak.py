"""Soak: does the server's memory stay flat over many concurrent API requests?

Starts the app (``app.py --no-verify``) in a subprocess on a free 127.0.0.1 port with a private
temporary folder, drives it through the named API endpoints from ``--clients`` threads (one
``gradio_client.Client`` each, reused, as a real API client would), and after every pass of
``--pass-size`` requests prints the server's resident memory (VmRSS of the process and any
children, from /proc), the requests done, errors (expected: the hostile uploads; unexpected:
anything else), how many session folders and MB of temporary files the server holds, and the
CPU seconds (user + system) the server has used.
Columns: ``ok`` normal requests answered; ``refused`` hostile uploads refused with a clean
message (expected); ``accepted`` hostile uploads the app answered instead (the 1-pixel PNG is
upscaled and classified); ``unexpected`` anything that failed otherwise (a crash, a timeout,
"Something went wrong").

The request mix cycles through 13 kinds: /models; /predict on audio and on an X-ray; /explain
with Grad-CAM, LIME (200 samples), SHAP (200 evaluations) and Integrated Gradients on the audio
CNN and on the X-ray CNN; /compare (Grad-CAM + saliency); and a hostile upload (an empty file, a
truncated WAV, random bytes named .png, a 1-pixel PNG), which must get a clean answer while the
server goes on serving.

    python bench/soak.py [--requests 1000] [--clients 8] [--pass-size 100] [--port 0]
                         [--env MALLOC_ARENA_MAX=2] [--server-arg --concurrency=4]

It is a script, not a test: it stops by itself and exits 1 if a request failed unexpectedly.
The results of the last run are in docs/BENCHMARKS.md ("Soak: memory over 1,000 requests").
"""

from __future__ import annotations

import argparse
import itertools
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AUDIO = sorted((ROOT / "examples" / "audio").glob("*.wav"))
XRAY = sorted(p for p in (ROOT / "examples" / "xray").iterdir()
              if p.suffix in (".png", ".dcm") and not p.name.endswith(".mask.png"))
AUDIO_MODEL, XRAY_MODEL = "audio-cnn", "xray-cnn"


# --- the server -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/*/stat)."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent_of[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [c for c, p in parent_of.items() if p in frontier]
        found += frontier
    return found


def rss_mb(pid: int) -> float:
    total = 0
    for p in children(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children (from /proc/<pid>/stat)."""
    total = 0.0
    for p in children(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def folder_stats(tmp: Path) -> tuple[int, float]:
    """(session folders, MB of files) under the server's temporary folder."""
    sessions = tmp / "xai-platform-sessions"
    n = sum(1 for _ in sessions.iterdir()) if sessions.is_dir() else 0
    size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    return n, size / 1e6


def start_server(port: int, tmp: Path, env_extra: list[str], server_args: list[str],
                 log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, TMPDIR=str(tmp), GRADIO_TEMP_DIR=str(tmp / "gradio"),
               GRADIO_ANALYTICS_ENABLED="False", MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONUNBUFFERED="1")
    for item in env_extra:
        key, _, value = item.partition("=")
        env[key] = value
    cmd = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port),
           "--no-verify", *server_args]
    log = open(log_path, "w")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_until_serving(proc: subprocess.Popen, url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url + "config", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"the server did not serve within {timeout:.0f} s")


# --- hostile uploads ------------------------------------------------------------------------

def png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))


def hostile_files(folder: Path) -> list[tuple[Path, str]]:
    """(file, model) pairs that must be refused with a clean error."""
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    truncated = folder / "truncated.wav"
    truncated.write_bytes(AUDIO[0].read_bytes()[:60])
    noise = folder / "noise.png"
    noise.write_bytes(os.urandom(4096))
    pixel = folder / "pixel.png"
    pixel.write_bytes(png_1x1())
    return [(empty, AUDIO_MODEL), (truncated, AUDIO_MODEL), (noise, XRAY_MODEL),
            (pixel, XRAY_MODEL)]


# --- the request mix ------------------------------------------------------------------------

def request_mix(hostile: list[tuple[Path, str]]):
    """Kind i of request n: (name, endpoint, args builder, expect an error)."""
    audio_cycle = itertools.cycle(AUDIO)
    xray_cycle = itertools.cycle(XRAY)
    hostile_cycle = itertools.cycle(hostile)
    lock = threading.Lock()

    def nxt(it):
        with lock:
            return next(it)

    def explain(modality, method, params):
        def build(n, handle_file):
            path = nxt(audio_cycle if modality == "audio" else xray_cycle)
            model = AUDIO_MODEL if modality == "audio" else XRAY_MODEL
            return (handle_file(str(path)), model, method, params, n % 3)
        return build

    def predict(modality):
        def build(n, handle_file):
            path = nxt(audio_cycle if modality == "audio" else xray_cycle)
            return (handle_file(str(path)), AUDIO_MODEL if modality == "audio" else XRAY_MODEL)
        return build

    def compare(n, handle_file):
        audio = n % 2 == 0
        path = nxt(audio_cycle if audio else xray_cycle)
        return (handle_file(str(path)), AUDIO_MODEL if audio else XRAY_MODEL,
                ["gradcam", "saliency"], 0)

    def hostile_request(n, handle_file):
        path, model = nxt(hostile_cycle)
        return (handle_file(str(path)), model)

    kinds = [("models", "/models", lambda n, h: (), False),
             ("predict-audio", "/predict", predict("audio"), False),
             ("predict-xray", "/predict", predict("xray"), False)]
    for method, params in (("gradcam", None), ("lime", {"num_samples": 200}),
                           ("shap", {"n_evaluations": 200}), ("integrated_gradients", None)):
        for modality in ("audio", "xray"):
            kinds.append((f"{method}-{modality}", "/explain", explain(modality, method, params),
                          False))
    kinds += [("compare", "/compare", compare, False),
              ("hostile", "/predict", hostile_request, True)]
    return kinds


# --- the driver -----------------------------------------------------------------------------

class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = self.expected = self.accepted = self.unexpected = 0
        self.messages: list[str] = []

    def add(self, kind: str, outcome: str, message: str = "") -> None:
        with self.lock:
            setattr(self, outcome, getattr(self, outcome) + 1)
            if outcome == "unexpected" and len(self.messages) < 20:
                self.messages.append(f"{kind}: {message[:300]}")


def worker(url: str, jobs: queue.Queue, kinds, tally: Tally) -> None:
    from gradio_client import Client, handle_file

    client = None
    while True:
        n = jobs.get()
        if n is None:
            jobs.task_done()
            return
        name, endpoint, build, expect_error = kinds[n % len(kinds)]
        try:
            if client is None:
                client = Client(url, verbose=False)
            client.predict(*build(n, handle_file), api_name=endpoint)
            tally.add(name, "accepted" if expect_error else "ok")
        except Exception as exc:  # noqa: BLE001 - counted and reported
            from gradio_client.exceptions import AppError

            text = str(exc)
            clean = isinstance(exc, AppError) and text and "Something went wrong" not in text
            tally.add(name, "expected" if expect_error and clean else "unexpected",
                      f"{type(exc).__name__}: {exc}")
        finally:
            jobs.task_done()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--pass-size", type=int, default=100)
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the server (repeatable)")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra app.py argument (repeatable)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder and log")
    args = p.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the server
    tmp = Path(tempfile.mkdtemp(prefix="xai-soak-"))
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}/"
    log_path = tmp / "server.log"
    proc = start_server(port, tmp, args.env, args.server_arg, log_path)
    tally = Tally()
    try:
        wait_until_serving(proc, url)
        print(f"serving on {url} (pid {proc.pid}); RSS {rss_mb(proc.pid):.0f} MB before any model "
              f"is loaded; "
              f"{args.clients} clients, {args.requests} requests in passes of {args.pass_size}"
              + (f"; env {' '.join(args.env)}" if args.env else ""), flush=True)
        kinds = request_mix(hostile_files(tmp / "hostile"))
        jobs: queue.Queue = queue.Queue()
        threads = [threading.Thread(target=worker, args=(url, jobs, kinds, tally), daemon=True)
                   for _ in range(args.clients)]
        for t in threads:
            t.start()
        print(f"{'pass':>4} {'requests':>8} {'ok':>6} {'refused':>7} {'accepted':>8} "
              f"{'unexpected':>10} {'RSS MB':>8} {'vs pass 1':>9} {'sessions':>8} {'tmp MB':>7} "
              f"{'s':>6} {'CPU s':>6}", flush=True)
        done, first, rss_by_pass, started = 0, None, [], time.monotonic()
        for number in itertools.count(1):
            if done >= args.requests:
                break
            size = min(args.pass_size, args.requests - done)
            for n in range(done, done + size):
                jobs.put(n)
            jobs.join()
            done += size
            if proc.poll() is not None:
                print(f"the server died (exit code {proc.returncode})", flush=True)
                break
            rss = rss_mb(proc.pid)
            rss_by_pass.append(rss)
            first = first or rss
            sessions, tmp_mb = folder_stats(tmp)
            print(f"{number:>4} {done:>8} {tally.ok:>6} {tally.expected:>7} {tally.accepted:>8} "
                  f"{tally.unexpected:>10} "
                  f"{rss:>8.0f} {100 * (rss / first - 1):>+8.1f}% {sessions:>8} {tmp_mb:>7.1f} "
                  f"{time.monotonic() - started:>6.0f} {cpu_seconds(proc.pid):>6.0f}", flush=True)
        for _ in threads:
            jobs.put(None)
        if len(rss_by_pass) > 1:
            later = rss_by_pass[1:]
            print(f"after warm-up (pass 1: {rss_by_pass[0]:.0f} MB): min {min(later):.0f}, "
                  f"max {max(later):.0f} MB, last {later[-1]:.0f} MB "
                  f"({100 * (max(later) / rss_by_pass[0] - 1):+.1f}% at most)", flush=True)
        for message in tally.messages:
            print(f"unexpected: {message}", flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if args.keep:
            print(f"kept {tmp} (server log: {log_path})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if tally.unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
