"""Launch the XAI platform web app: parse flags -> load config -> build the app -> launch.

    python app.py [--host 127.0.0.1] [--port 7860] [--share] [--auth user:password]
                  [--config PATH ...] [--device auto|cpu|cuda] [--concurrency N]
                  [--no-fast-forward | --bf16]
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from xai_platform.cli import add_forward_flags

    p = argparse.ArgumentParser(description="XAI platform web app")
    p.add_argument("--host", default=os.environ.get("XAI_HOST", "127.0.0.1"),
                   help="interface to listen on (0.0.0.0 for the whole network)")
    p.add_argument("--port", type=int, default=int(os.environ.get("XAI_PORT", 7860)))
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link")
    p.add_argument("--auth", default=os.environ.get("XAI_AUTH"),
                   help="user:password protecting the app (or set XAI_AUTH)")
    p.add_argument("--config", action="append", default=[], metavar="PATH",
                   help="extra model config file or folder (repeatable)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--concurrency", type=int, default=None,
                   help="requests run at the same time (default: app.concurrency in config)")
    p.add_argument("--max-audio-seconds", type=float, default=None,
                   help="refuse longer recordings (default: app.max_audio_seconds)")
    add_forward_flags(p)
    p.add_argument("--no-verify", action="store_true",
                   help="skip checking every model's target layer (otherwise checked in the "
                        "background after start-up; the Models tab shows the results)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from xai_platform.memory import pin_mmap_threshold

    pin_mmap_threshold()  # before the models load: freed buffers go back to the system
    from dataclasses import replace

    from xai_platform.cli import forward_flags
    from xai_platform.config import load_config
    from xai_platform.errors import XAIError

    auth = None
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            print("error: --auth takes user:password", file=sys.stderr)
            return 2
        auth = (user, password)
    try:
        config = load_config(args.config)
        if args.max_audio_seconds:
            config = replace(config, app=replace(config.app, max_audio_seconds=args.max_audio_seconds))
        config = replace(config, app=forward_flags(
            config.app, no_fast_forward=args.no_fast_forward, bf16=args.bf16))
        from xai_platform.models import ModelManager

        manager = ModelManager(config, device=args.device)
        # The target-layer checks import the frameworks: they run once the page is served.
        checks = None if args.no_verify else manager.verify_in_background(start=False)
    except XAIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from xai_platform.ui.app import build_app, launch

    demo = build_app(manager, config.app)
    # prevent_thread_lock: the checks start after the page is served; warm_up: the imports the
    # first request needs, and the X-ray gate's segmenter where X-ray uploads are checked
    gate = config.app.check_inputs and any(s.modality == "xray" for s in manager.specs)
    launch(demo, host=args.host, port=args.port, share=args.share, auth=auth,
           concurrency=args.concurrency or config.app.concurrency, prevent_thread_lock=True,
           warm_up=True, gate=gate)
    if checks is not None:
        checks.start()
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
