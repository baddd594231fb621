"""Leave one real source out (issue 15, item 2): train on every real source but one, test on
that one.

    python -m training.audio_loso --data data/audio_corpus_v2 --model audio-cnn-v2 \\
        --config config/research --weights-dir runs/audio/loso --out docs/audio-v2/loso

For each real source of the corpus the fold is built (:func:`training.audio.corpus_v2.
build_fold`: the source's real clips, their vocoded copies and the synthetic clips reading its
texts are the test split; validation keeps the plan's validation clips of the other sources),
the model is trained on it with its entry's recipe unless ``<weights-dir>/loso-<source>.pt``
already has a card (so a stopped run resumes fold by fold), and the report gathers each fold's
card: the held-out source's EER and ROC AUC, and at the threshold chosen on the fold's
validation split, its real clips called fake and its fakes let through, per generator.

``--selection`` makes folds for choosing between recipes instead (``select-<source>``: the
plan's test clips left out altogether, only training sources held out, their twins neither
trained on nor tested), so that a choice made on them never sees the test split; ``--compare
A.json B.json ...`` then sets the recipes' reports side by side over the sources they share:

    python -m training.audio_loso --selection --data data/audio_corpus_v3gk \
        --model audio-cnn-v3gk --config config/research --config scripts/paired/paired.yaml \
        --weights-dir runs/audio/select-v3gk --out docs/audio-v3/select_v3gk
    python -m training.audio_loso --compare docs/audio-v3/select_v3t.json \
        docs/audio-v3/select_v3gk.json --out docs/audio-v3/select

``--out-of-source`` makes the folds a trained network needs for out-of-source scores
(``oos-<source>``: the plan's test clips left out, each training source held out with its
twins, grouped as the read-out's out-of-source calibration groups its windows) and writes,
beside the report, ``<out>.scores.npz``: every held-out clip's key, source, label (1 fake)
and calibrated probability from the fold that never saw its source, the scores a threshold
or a "cannot tell" band for unseen set-ups is fitted on:

    python -m training.audio_loso --out-of-source --data data/audio_corpus_v3twlk \
        --model audio-cnn-v3t --config config/research --weights-dir runs/audio/oos-cnn \
        --out runs/audio/oos-cnn/report
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from xai_platform.config import load_config
from xai_platform.models.cards import read_card

from .corpus_v2 import build_fold, fold_name, read_metadata
from .splits import FOLDS


def fold_weights(weights_dir: Path, source: str, kind: str = "loso") -> Path:
    return weights_dir / f"{fold_name(source, kind)}.pt"


def train_command(model: str, configs: list[str], data: Path, source: str, weights: Path,
                  extra: list[str], kind: str = "loso") -> list[str]:
    """The training run of one fold: the model entry's recipe on the fold's data."""
    cfg = [a for c in configs for a in ("--config", c)]
    return [sys.executable, "-m", "training.train_audio", "--model", model, *cfg,
            "--data", str(data / fold_name(source, kind)), "--out", str(weights),
            "--no-robustness", "--explain", "", *extra]


def recipe(model: str, configs: list[str]) -> list[str]:
    """The options of the entry's ``train_command`` other than model, config, data, out and the
    summaries every fold skips (epochs, learning rate, augmentation, initialisation, seed)."""
    spec = load_config(configs).model(model)
    if not spec.train_command:
        return ["--epochs", "12", "--seed", "0"]
    args = shlex.split(spec.train_command)
    args = args[args.index("training.train_audio") + 1:] if "training.train_audio" in args else []
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("--model", "--config", "--data", "--out", "--explain"):
            skip = True
        elif a != "--no-robustness":  # train_command sets these two for every fold
            out.append(a)
    return out


def out_of_source_scores(model: str, configs: list[str], data: Path, weights_dir: Path,
                         sources: list[str], *, cache_dir: Path = Path("data/feature_cache")
                         ) -> dict[str, np.ndarray]:
    """Every held-out clip of the out-of-source folds of ``sources``, scored by the fold that
    never saw its source (at that fold's calibrated temperature, the app's clip rule): key,
    source, y (1 fake) and p, concatenated in ``sources``' order."""
    from .probe import detector_scores

    parts: dict[str, list[Any]] = {"key": [], "source": [], "y": [], "p": []}
    for source in sources:
        y, p, clips = detector_scores(model, [Path(c) for c in configs],
                                      data / fold_name(source, "oos"), cache_dir,
                                      splits=("test",),
                                      weights=fold_weights(weights_dir, source, "oos"))["test"]
        parts["key"] += [c.key for c in clips]
        parts["source"] += [source] * len(clips)
        parts["y"].append(np.asarray(y, np.int64))
        parts["p"].append(np.asarray(p, np.float64))
    return {"key": np.array(parts["key"]), "source": np.array(parts["source"]),
            "y": np.concatenate(parts["y"]), "p": np.concatenate(parts["p"])}


def fold_row(source: str, card: Any) -> dict[str, Any]:
    """One fold's figures from its card (test = the held-out source)."""
    test, val = card.metrics["test"], card.metrics["validation"]
    by = test.by_generator or {}
    fakes = {g: round(v["miss_rate"], 4) for g, v in by.items() if "miss_rate" in v}
    return {"source": source, "n_real": test.n - test.n_positive, "n_fake": test.n_positive,
            "validation_eer": round(val.eer, 4), "eer": round(test.eer, 4),
            "roc_auc": round(test.roc_auc, 4), "false_alarms": round(test.false_alarm_rate, 4),
            "misses": round(test.miss_rate, 4), "threshold": round(test.threshold, 4),
            "misses_by_generator": fakes}


def report_markdown(model: str, rows: list[dict[str, Any]], commands: dict[str, str],
                    kind: str = "loso") -> str:
    what = ("Each row: trained on every other real source (and the synthetic and vocoded clips "
            "of their texts), threshold and temperature chosen on the fold's validation split, "
            "tested on the held-out source's real clips, their vocoded copies and the synthetic "
            "clips reading its texts.")
    if kind == "select":
        what += (" Folds for choosing between recipes: the corpus's test split is in none of "
                 "them, and the held-out source's twins are neither trained on nor tested.")
    elif kind == "oos":
        what += (" Out-of-source folds: the corpus's test split is in none of them; the "
                 "held-out training source's twins are tested with it.")
    title = {"loso": "", "select": " (selection folds)", "oos": " (out-of-source folds)"}[kind]
    lines = [f"# Leave one real source out{title}: `{model}`", "", what, "",
             "| held-out source | real / fake clips | validation EER | test EER | ROC AUC | "
             "real called fake | fakes let through | threshold |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['source']} | {r['n_real']} / {r['n_fake']} | "
                     f"{r['validation_eer']:.1%} | {r['eer']:.1%} | {r['roc_auc']:.3f} | "
                     f"{r['false_alarms']:.1%} | {r['misses']:.1%} | {r['threshold']:.3f} |")
    gens = sorted({g for r in rows for g in r["misses_by_generator"]})
    lines += ["", "Fakes let through at the fold's threshold, per generator (the clips reading "
              "the held-out source's texts):", "",
              "| held-out source | " + " | ".join(gens) + " |",
              "| --- | " + " | ".join("---:" for _ in gens) + " |"]
    for r in rows:
        cells = [f"{r['misses_by_generator'][g]:.0%}" if g in r["misses_by_generator"] else ""
                 for g in gens]
        lines.append(f"| {r['source']} | " + " | ".join(cells) + " |")
    lines += ["", "Reproduce:", "", "```"] + [commands[r["source"]] for r in rows] + ["```", ""]
    return "\n".join(lines)


def compare_markdown(reports: list[dict[str, Any]]) -> str:
    """Recipes side by side over the held-out sources every report has: test EER per fold,
    the mean, and how many folds each recipe has the lowest EER on."""
    by = [{r["source"]: r for r in rep["folds"]} for rep in reports]
    shared = sorted(set.intersection(*(set(b) for b in by)))
    if not shared:
        raise SystemExit("the reports share no held-out source.")
    names = [rep["model"] for rep in reports]
    lines = ["# Recipes on the same leave-one-source-out folds", "",
             "Test EER of each fold (the held-out source's clips), at equal folds: "
             + ", ".join(f"`{n}` ({rep['data']})" for n, rep in zip(names, reports)) + ".", "",
             "| held-out source | " + " | ".join(f"`{n}`" for n in names) + " |",
             "| --- | " + " | ".join("---:" for _ in names) + " |"]
    wins = [0] * len(names)
    for source in shared:
        eers = [b[source]["eer"] for b in by]
        wins[eers.index(min(eers))] += 1
        lines.append(f"| {source} | " + " | ".join(f"{e:.1%}" for e in eers) + " |")
    means = [sum(b[s]["eer"] for s in shared) / len(shared) for b in by]
    fa = [sum(b[s]["false_alarms"] for s in shared) / len(shared) for b in by]
    lines += ["| **mean** | " + " | ".join(f"**{m:.1%}**" for m in means) + " |",
              "| real called fake, mean | " + " | ".join(f"{m:.1%}" for m in fa) + " |",
              "| folds with the lowest EER | " + " | ".join(str(w) for w in wins) + " |"]
    left = sorted(set().union(*(set(b) for b in by)) - set(shared))
    if left:
        lines += ["", f"Left out (not in every report): {', '.join(left)}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.audio_loso",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/audio_corpus_v2"))
    parser.add_argument("--model", default="audio-cnn-v2")
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--weights-dir", type=Path, default=Path("runs/audio/loso"))
    parser.add_argument("--out", type=Path, default=Path("docs/audio-v2/loso"),
                        help="report stem (.md and .json)")
    parser.add_argument("--source", action="append", default=None,
                        help="only these sources (default: every real source)")
    parser.add_argument("--cache-dir", type=Path, default=Path("data/feature_cache"),
                        help="feature cache for --out-of-source's scores")
    parser.add_argument("--no-train", action="store_true",
                        help="report the folds already trained; train none")
    kinds = parser.add_mutually_exclusive_group()
    kinds.add_argument("--selection", action="store_true",
                       help="folds for choosing between recipes: no test-split clip, only "
                            "training sources held out, their twins left out")
    kinds.add_argument("--out-of-source", action="store_true",
                       help="out-of-source folds (no test-split clip, each training source "
                            "held out with its twins) and OUT.scores.npz, every held-out clip's "
                            "probability from the fold that never saw its source")
    parser.add_argument("--compare", nargs="+", type=Path, default=None, metavar="JSON",
                        help="only set these reports side by side (written to --out)")
    args = parser.parse_args(argv)
    if args.compare:
        text = compare_markdown([json.loads(p.read_text()) for p in args.compare])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        print(text)
        return 0
    kind = "select" if args.selection else "oos" if args.out_of_source else "loso"
    rows_meta = read_metadata(args.data / "metadata.csv")
    sources = args.source or FOLDS[kind].sources(rows_meta)
    extra = recipe(args.model, args.config)
    rows, commands = [], {}
    for source in sources:
        weights = fold_weights(args.weights_dir, source, kind)
        cmd = train_command(args.model, args.config, args.data, source, weights, extra, kind)
        commands[source] = (f"python -m training.audio_corpus_v2 --out {args.data} --{kind} "
                            f"{source} && " + shlex.join(["python", *cmd[1:]]))
        if read_card(weights) is None:
            if args.no_train:
                print(f"  {source}: not trained yet ({weights})", file=sys.stderr)
                continue
            build_fold(args.data, source, kind=kind)
            weights.parent.mkdir(parents=True, exist_ok=True)
            print(f"  {source}: training -> {weights}", file=sys.stderr)
            subprocess.run(cmd, check=True)
        rows.append(fold_row(source, read_card(weights)))
    if not rows:
        raise SystemExit("no fold is trained yet.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "oos":
        scores = out_of_source_scores(args.model, args.config, args.data, args.weights_dir,
                                      [r["source"] for r in rows], cache_dir=args.cache_dir)
        np.savez(args.out.with_suffix(".scores.npz"), **scores)
    report = report_markdown(args.model, rows, commands, kind)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"model": args.model, "data": str(args.data), "kind": kind,
         "folds": rows, "commands": commands}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(report)
    print(report)
    return 0
