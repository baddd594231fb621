"""`python app.py` as a user starts it: flags, a share link that cannot be made offline, auth."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT, TINY_MODELS, write_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], env: dict | None = None) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, "app.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    lines: list[str] = []
    deadline = time.time() + 180
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if "Serving on" in line:
            return proc, lines
    proc.kill()
    raise AssertionError("app did not start:\n" + "".join(lines))


@pytest.fixture
def tiny(tmp_path):
    models = [m for m in TINY_MODELS if m["framework"] == "torch"]
    return write_config(tmp_path / "tiny.yaml", models)


def test_share_without_internet_still_serves_locally(tiny):
    port = _free_port()
    proc, lines = _start(["--port", str(port), "--share", "--no-verify", "--config", str(tiny)],
                         env={"GRADIO_SHARE_SERVER_ADDRESS": "127.0.0.1:9"})
    try:
        text = "".join(lines)
        assert "share link could not be created" in text and "runs locally" in text
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert response.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_app_warms_up_for_the_first_request_once_the_page_is_served(tmp_path):
    # `python app.py` imports what the first explanation and figure need, and loads the X-ray
    # gate's segmenter, in the background after serving, and says when it is done (it never
    # did: the thread was started only by a launch() that blocks, which app.py does not use).
    models = [m for m in TINY_MODELS if m["framework"] == "torch"]  # an X-ray model among them
    checked = write_config(tmp_path / "checked.yaml", models, app={"check_inputs": True})
    port = _free_port()
    proc, _ = _start(["--port", str(port), "--no-verify", "--config", str(checked)])
    try:
        deadline, ready = time.time() + 240, ""
        while time.time() < deadline and not ready:
            line = proc.stdout.readline()
            ready = line if "Ready for the first request" in line else ""
        assert ready, "no 'Ready for the first request' line"
        assert "libraries imported and one figure drawn" in ready
        from xai_platform.anatomy import lung_segmenter

        if lung_segmenter() is not None:
            assert "lung segmenter loaded" in ready
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_auth_protects_the_api(tiny):
    from gradio_client import Client

    port = _free_port()
    proc, _ = _start(["--port", str(port), "--no-verify", "--config", str(tiny)],
                     env={"XAI_AUTH": "alice:s3cret"})
    url = f"http://127.0.0.1:{port}/"
    try:
        with pytest.raises(Exception):
            Client(url, verbose=False).predict(api_name="/models")
        client = Client(url, auth=("alice", "s3cret"), verbose=False)
        assert client.predict(api_name="/models")["models"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_bad_config_stops_start_up_with_one_line(tmp_path):
    bad = write_config(tmp_path / "bad.yaml", [TINY_MODELS[0] | {"colour": "red"}])
    result = subprocess.run([sys.executable, "app.py", "--config", str(bad)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "colour" in result.stderr
    assert "Traceback" not in result.stderr


BUILD_AND_LAUNCH = """
import sys
from xai_platform.config import load_config
from xai_platform.models import ModelManager
from xai_platform.ui.app import build_app, launch
config = load_config([])  # the shipped config, as `python app.py` reads it
demo = build_app(ModelManager(config), config.app)
launch(demo, host="127.0.0.1", port=int(sys.argv[1]), share=False, auth=None, concurrency=1,
       prevent_thread_lock=True)
heavy = ("torch", "tensorflow", "keras", "matplotlib", "librosa", "cv2", "onnxruntime",
         "transformers", "scipy", "sklearn")
print("IMPORTED", *[m for m in heavy if m in sys.modules])
demo.close()
"""


def test_the_page_is_served_before_any_framework_is_imported():
    # Start-up time: the frameworks and plotting libraries load when a model or a figure is
    # first needed, or in the background checks once the page is up, never before it.
    result = subprocess.run([sys.executable, "-c", BUILD_AND_LAUNCH, str(_free_port())],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("IMPORTED"))
    assert line.split()[1:] == []


PRELOAD = """
import sys
from xai_platform.preload import PRELOAD, preload
done = preload(PRELOAD + ("no_such_module_xai",))
print("DONE", *done)
print("LOADED", *[m for m in PRELOAD if m in sys.modules])
"""


def test_preload_imports_what_the_first_figure_needs_and_skips_what_is_missing():
    # After the page is served, the app imports what the first explanation and figure would
    # otherwise wait for; a library that is not installed does not stop it.
    result = subprocess.run([sys.executable, "-c", PRELOAD], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    lines = {x.split()[0]: x.split()[1:] for x in result.stdout.splitlines() if x.strip()}
    assert "no_such_module_xai" not in lines["DONE"]
    assert lines["DONE"] == lines["LOADED"]
    assert {"xai_platform.visualization.figure", "lime.lime_base", "onnx"} <= set(lines["LOADED"])


FIRST_AUDIO = """
import sys
from xai_platform.preload import preload
preload()
before = set(sys.modules)
from xai_platform.config import load_config
from xai_platform.pipeline import prepare
config = load_config()
spec = next(s for s in config.models if s.modality == "audio" and s.input.kind == "log_mel")
prepare("examples/audio/real_klettres_de_b.wav", spec, settings=config.app)
print("NEW", *sorted(m for m in set(sys.modules) - before
                     if m.split(".")[0] in ("librosa", "numba", "llvmlite")))
"""


def test_the_first_audio_upload_does_not_wait_for_librosa_and_numba():
    # librosa loads its spectral features, and numba with them (which compiles kernels as it
    # imports), on first use: 1.4 s of the app's first audio request until the preload did it.
    result = subprocess.run([sys.executable, "-c", FIRST_AUDIO], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("NEW"))
    assert line.split()[1:] == []


def test_the_concurrency_limit_lets_that_many_requests_run_at_once():
    import threading

    import gradio as gr
    from gradio_client import Client

    from xai_platform.ui.app import launch

    together = threading.Barrier(2, timeout=60)

    def meet(x: str) -> str:
        together.wait()  # returns only once both requests are running at the same time
        return x

    with gr.Blocks() as demo:
        gr.api(meet, api_name="meet")
    port = _free_port()
    launch(demo, host="127.0.0.1", port=port, share=False, auth=None, concurrency=2,
           prevent_thread_lock=True)
    try:
        results: list = [None, None]

        def call(i):
            results[i] = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
                str(i), api_name="/meet")

        threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == ["0", "1"]
    finally:
        demo.close()


PAGE_CONFIG = """
import json, re, sys
if sys.argv[1] == "gradio-first":  # Gradio as it imports itself: stubs regenerated
    import gradio
from xai_platform.config import load_config
from xai_platform.models import ModelManager
from xai_platform.ui.app import build_app
import gradio.component_meta
config = load_config([])
page = build_app(ModelManager(config), config.app).get_config_file()
page.pop("app_id")  # random per app
text = re.sub(r" at 0x[0-9a-f]+", "", json.dumps(page, sort_keys=True, default=str))
print(gradio.component_meta.create_or_modify_pyi.__module__)
print(text)
"""


def _python(code: str, *args: str, env: dict | None = None) -> list[str]:
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_skipping_gradio_stub_writing_serves_the_same_page():
    # xai_platform.ui skips Gradio's .pyi regeneration at import (about 1 s of start-up); the
    # page config, every component with its props and events, is the same as Gradio's own.
    ours = _python(PAGE_CONFIG, "ours")
    reference = _python(PAGE_CONFIG, "gradio-first")
    assert ours[0] == "xai_platform.ui.gradio_import"  # the hook was in place
    assert reference[0] == "gradio.component_meta"  # imported first: left as it is
    assert ours[1] == reference[1]


CUSTOM_COMPONENT = """
import sys
sys.path.insert(0, sys.argv[1])
import xai_platform.ui
import gradio
import mybox  # class MyBox(gradio.Textbox)
print(mybox.MyBox.__mro__[1].__name__)
"""


@pytest.mark.parametrize("stubs", ["", "1"])
def test_gradio_writes_no_stub_unless_asked(tmp_path, stubs):
    (tmp_path / "mybox.py").write_text("import gradio\n\n\nclass MyBox(gradio.Textbox):\n"
                                       "    pass\n")
    out = _python(CUSTOM_COMPONENT, str(tmp_path), env={"XAI_GRADIO_STUBS": stubs})
    assert out == ["Textbox"]
    # XAI_GRADIO_STUBS=1 keeps Gradio's behaviour: a .pyi next to the component's source
    assert (tmp_path / "mybox.pyi").exists() == bool(stubs)
