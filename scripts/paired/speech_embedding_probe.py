"""Is a pretrained speech encoder that installs here a front-end for the detector? Google's
``speech_embedding`` (the keyword-spotting encoder of TF Hub, shipped as ONNX inside the
``openwakeword==0.5.1`` wheel with its mel front-end; later versions download it) as a frozen
front-end: per clip the mean and standard deviation of its 96-d embeddings (one per 80 ms over
775 ms windows), a logistic regression fitted on the training split, its strength and the
threshold chosen on validation, the test figures per held-out real source and generator.
Beside it, as a control, the same regression on the clip's mean and standard deviation of the
encoder's own 32 mel bands.

    pip download --no-deps openwakeword==0.5.1 -d /tmp/oww
    python -c "import zipfile; zipfile.ZipFile('/tmp/oww/openwakeword-0.5.1-py3-none-any.whl').extractall('/tmp/oww')"
    PYTHONPATH=. python scripts/paired/speech_embedding_probe.py --data data/audio_corpus_v3t \\
        --models /tmp/oww/openwakeword/resources/models

A measurement (docs/AUDIO.md, "Professional telephone voices in training; ..."), not an app
feature: the wheel is not a requirement.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from training.metrics import equal_error_rate
from xai_platform.preprocessing import audio

WINDOW, STEP = 76, 8  # mel frames per embedding window and between windows (openWakeWord's)


def clip_features(paths: list[Path], models: Path) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    mel = ort.InferenceSession(str(models / "melspectrogram.onnx"), opts,
                               providers=["CPUExecutionProvider"])
    emb = ort.InferenceSession(str(models / "embedding_model.onnx"), opts,
                               providers=["CPUExecutionProvider"])
    out = np.zeros((len(paths), 2 * 96 + 2 * 32), np.float32)
    for i, path in enumerate(paths):
        x, _ = audio.decode_audio(path)  # 16 kHz mono
        x = np.clip(x, -1, 1) * 32767  # the encoder takes 16-bit PCM values
        x = np.pad(x, (0, max(0, 16000 - len(x))))
        spec = np.squeeze(mel.run(None, {mel.get_inputs()[0].name: x[None].astype(np.float32)})[0])
        spec = spec / 10 + 2  # openWakeWord's transform towards TF Hub's front-end
        wins = np.stack([spec[j:j + WINDOW] for j in range(0, len(spec) - WINDOW + 1, STEP)])
        e = emb.run(None, {"input_1": wins[..., None].astype(np.float32)})[0].reshape(len(wins), -1)
        out[i] = np.concatenate([e.mean(0), e.std(0), spec.mean(0), spec.std(0)])
    return out


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True,
                        help="openwakeword/resources/models of the unpacked 0.5.1 wheel")
    args = parser.parse_args()
    with open(args.data / "metadata.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    feats = clip_features([args.data / r["path"] for r in rows], args.models)
    y = np.array([r["label"] == "fake" for r in rows], int)
    split = np.array([r["split"] for r in rows])
    group = np.array([r["generator"] if r["label"] == "fake" else r["source"] for r in rows])
    for name, cols in (("speech_embedding", slice(0, 192)), ("mel statistics (control)",
                                                              slice(192, 256))):
        scaler = StandardScaler().fit(feats[split == "train", cols])
        x = {s: scaler.transform(feats[split == s, cols]) for s in ("train", "validation", "test")}
        best = None
        for c in (0.001, 0.01, 0.1, 1.0):
            m = LogisticRegression(C=c, max_iter=3000).fit(x["train"], y[split == "train"])
            eer, thr = equal_error_rate(m.decision_function(x["validation"]),
                                        y[split == "validation"])[:2]
            if best is None or eer < best[0]:
                best = (eer, thr, c, m)
        eer, thr, c, m = best
        t, yt, gt = m.decision_function(x["test"]), y[split == "test"], group[split == "test"]
        print(f"{name}: C {c}, validation EER {eer:.1%}, test EER "
              f"{equal_error_rate(t, yt)[0]:.1%}, AUC {roc_auc_score(yt, t):.3f}, false alarms "
              f"{np.mean(t[yt == 0] > thr):.1%}, misses {np.mean(t[yt == 1] <= thr):.1%}")
        wrong = {g: np.mean((t[gt == g] > thr) != (yt[gt == g] == 1)) for g in sorted(set(gt))}
        print("  wrong at the validation threshold: "
              + ", ".join(f"{g} {w:.0%}" for g, w in wrong.items()))


if __name__ == "__main__":
    main()
