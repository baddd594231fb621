"""Fréchet Audio Distance per generator, beside each detector's detection rate per generator:
does a generator that sounds closer to real speech get caught less often?

    python -m training.audio_fad --data data/audio_corpus_v2 [--embedding resemblyzer]
        [--embedding detector:audio-cnn] [--detector audio-cnn ...] [--split all]

Every clip of the chosen split (``all``: the three splits pooled, the default, since FAD
describes a generator, not a split, and the smaller generators have too few test clips) is
embedded (:mod:`training.audio.embeddings`); the real clips of every source together are the
reference; each generator's clips are compared with it (:mod:`training.audio.frechet`): FAD
from the same ``n`` clips for every generator (several seeded draws: mean, spread, n), and
FAD-infinity. The floor is what a "generator" of real clips reads.

Each ``--detector``'s detection rate per generator is read from its model card (test split,
at the card's threshold) when the card was made on this corpus (the same metadata.csv);
otherwise it is measured here on this corpus's test split by the app's verdict rule at the
card's temperature and threshold (:func:`training.audio.evaluate.report`, which wrote the
card's figures). Then, per embedding, estimator and detector, Spearman's rho between FAD and
detection rate across generators, with an exact permutation p-value: with a handful of
generators only a strong rank agreement means anything.

Writes ``fad.json`` and ``fad.md`` into ``--out`` (default: the corpus folder, beside
``corpus_card.md``); a later run with another embedding or detector adds to them (same
metadata.csv and settings), so that one table holds every embedding.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from xai_platform.files import sha256

from . import embeddings
from .data import Clip, load_corpus
from .frechet import Reference, equal_n, fad_infinity, real_floor, sizes_for

SPLIT_CHOICES = ("all", "train", "validation", "test")
CAVEAT = ("With k generators a rank correlation is weak evidence: the exact two-sided p-value "
          "cannot fall below 2 / k! (k = 3: 0.33; k = 5: 0.017), |rho| must reach about 0.74 "
          "for p < 0.05 at k = 8, and each detection rate rests on that generator's test clips "
          "alone (n per cell). FAD also measures what the generator reads (languages, texts, "
          "the sources whose lines it speaks), not only how it synthesises.")


# --------------------------------------------------------------------------------------------
# The corpus


def read_manifest(data: Path) -> list[dict[str, str]]:
    """The corpus's metadata.csv rows (v1 or v2 layout)."""
    path = Path(data) / "metadata.csv"
    if not path.is_file():
        raise SystemExit(f"{data} holds no metadata.csv; point --data at a corpus built by "
                         "python -m training.audio_corpus_v2 (or training.audio_corpus).")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"path", "label", "generator", "split"} - set(rows[0] if rows else {})
    if missing:
        raise SystemExit(f"{path} lacks the columns {sorted(missing)}; is it an audio corpus?")
    return rows


def clips_of(data: Path, split: str) -> tuple[list[Clip], dict[str, dict[str, str]]]:
    """The clips of ``split`` (``all``: every split) and each clip's manifest row by path."""
    by_path = {str(Path(data) / r["path"]): r for r in read_manifest(data)}
    clips = [c for c in load_corpus(Path(data)) if split == "all" or c.split == split]
    if not {c.label for c in clips} >= {"real", "fake"}:
        raise SystemExit(f"the {split} clips of {data} are not both real and fake.")
    return clips, by_path


# --------------------------------------------------------------------------------------------
# FAD per generator


def _rng(seed: int, *names: str) -> np.random.Generator:
    """A generator's own stream: its figures do not depend on which others are in the run."""
    return np.random.default_rng([seed, *(zlib.crc32(n.encode()) for n in names)])


def fad_per_generator(emb: embeddings.Embedded, by_path: dict[str, dict[str, str]], *,
                      n: int | None, draws: int, steps: int, min_clips: int,
                      seed: int) -> dict[str, Any]:
    """FAD of each generator's embedded clips to the real clips' Gaussian (equal n and
    FAD-infinity) and the real floor; generators with fewer than ``min_clips`` are listed,
    not measured."""
    real, gens, kinds = [], {}, {}
    for path, v in zip(emb.paths, emb.x):
        r = by_path[path]
        if r["label"] == "real":
            real.append(v)
        else:
            gens.setdefault(r["generator"], []).append(v)
            kinds[r["generator"]] = r.get("generator_kind", "")
    counts = {g: len(v) for g, v in sorted(gens.items())}
    eligible = {g: np.stack(v) for g, v in sorted(gens.items()) if len(v) >= min_clips}
    if not eligible:
        raise SystemExit(f"no generator has {min_clips} embedded clips (counts: {counts}).")
    smallest = min(len(x) for x in eligible.values())
    n = smallest if n is None else n
    if n > smallest or n < 2:
        raise SystemExit(f"--n {n}: every generator needs n clips, the smallest has "
                         f"{smallest}; choose 2 <= n <= {smallest} or raise --min-clips.")
    real_x = np.stack(real)
    reference = Reference.of(real_x)
    out: dict[str, Any] = {"n": n, "draws": draws, "n_real": len(real_x),
                           "dims": int(real_x.shape[1]), "generators": {},
                           "too_few_clips": {g: c for g, c in counts.items() if g not in eligible}}
    for g, x in eligible.items():
        rng = _rng(seed, g)
        eq = equal_n(reference, x, n=n, draws=draws, rng=rng)
        inf = fad_infinity(reference, x, sizes=sizes_for(len(x), steps=steps), draws=draws,
                           rng=rng)
        out["generators"][g] = {"kind": kinds[g], "clips": len(x), "equal_n": asdict(eq),
                                "fad_inf": asdict(inf)}
    eq, inf = real_floor(real_x, n=n, draws=draws, steps=steps, rng=_rng(seed, "real floor"))
    out["real_floor"] = {"equal_n": asdict(eq), "fad_inf": asdict(inf)}
    return out


# --------------------------------------------------------------------------------------------
# Detection rates


def detector_rates(model_id: str, data: Path, clips: Sequence[Clip], *,
                   config: Sequence[Path] = (), cache_dir: Path | None = None,
                   measure: bool = False) -> dict[str, Any]:
    """Detection rate (1 - miss rate, clip verdicts at the card's threshold) per generator and
    false-alarm rate per real source on the test split: the card's own figures when the card
    was made on this corpus, else measured here by the same code."""
    from xai_platform.config import load_config
    from xai_platform.models.cards import read_card

    spec = load_config(list(config)).model(model_id)
    card = read_card(Path(spec.weights)) if spec.weights else None
    if card is None:
        raise SystemExit(f"'{model_id}' has no model card beside its weights ({spec.weights}); "
                         "its threshold and per-generator figures come from the card. Train "
                         "it first (training/README.md).")
    cal = card.calibration
    if cal.threshold is None:
        raise SystemExit(f"{model_id}'s card has no threshold; retrain or recalibrate it.")
    test = card.metrics.get("test")
    same_corpus = (card.data.details or {}).get("metadata_sha256") == sha256(
        Path(data) / "metadata.csv")
    out: dict[str, Any] = {"model": model_id, "split": "test", "threshold": cal.threshold,
                           "temperature": cal.temperature,
                           "trained_on": sorted(card.data.generators_trained_on or ())}
    if same_corpus and test is not None and test.by_generator and not measure:
        by_gen, eer = dict(test.by_generator), test.eer
        out.update(source="card", note="the card's test figures (made on this corpus)")
    else:
        from ..weights import load_saved
        from .evaluate import score_split

        rep = score_split(load_saved(spec, Path(spec.weights)), clips, "test",
                          temperature=cal.temperature, threshold=cal.threshold,
                          cache_dir=cache_dir)
        by_gen, eer = rep["by_generator"], rep["eer"]
        why = ("asked (--measure)" if measure else
               f"its card is of another corpus ({card.data.root})" if not same_corpus else
               "its card has no per-generator test figures")
        out.update(source="measured", note=f"measured here on this corpus's test split at the "
                                           f"card's temperature and threshold: {why}")
    out["eer"] = eer
    out["detected"] = {g: {"n": r["n"], "detection_rate": 1.0 - r["miss_rate"]}
                       for g, r in sorted(by_gen.items()) if "miss_rate" in r}
    out["false_alarms"] = {g: {"n": r["n"], "false_alarm_rate": r["false_alarm_rate"]}
                           for g, r in sorted(by_gen.items()) if "false_alarm_rate" in r}
    return out


# --------------------------------------------------------------------------------------------
# Correlation


def _ranks_corr(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    from scipy import stats

    ra = stats.rankdata(a, axis=axis)
    rb = stats.rankdata(b, axis=axis)
    ra = ra - ra.mean(axis=axis, keepdims=True)
    rb = rb - rb.mean(axis=axis, keepdims=True)
    return (ra * rb).sum(axis=axis) / np.sqrt((ra ** 2).sum(axis=axis) * (rb ** 2).sum(axis=axis))


def spearman(x: Sequence[float], y: Sequence[float], *, seed: int = 0) -> dict[str, Any]:
    """Spearman's rho of ``x`` and ``y`` and its two-sided permutation p-value (exact, over
    every pairing, up to 8 values; 100,000 seeded pairings beyond)."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    k = len(x)
    if k < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": None, "p": None, "k": k,
                "why": "fewer than 3 generators" if k < 3 else "no variation"}
    rho = float(stats.spearmanr(x, y).statistic)
    test = stats.permutation_test((x, y), _ranks_corr, permutation_type="pairings",
                                  vectorized=True, n_resamples=100_000, alternative="two-sided",
                                  random_state=seed)
    return {"rho": rho, "p": float(test.pvalue), "k": k, "exact": math.factorial(k) <= 100_000}


def correlations(result: dict[str, Any], *, seed: int) -> list[dict[str, Any]]:
    """Rho between FAD (each embedding, each estimator) and detection rate (each detector)
    over the generators that have both, and again over those the detector never trained on
    (what the question is about: a generator it has heard is caught however close it is)."""
    out = []
    for emb, e in sorted(result["embeddings"].items()):
        for det, d in sorted(result["detectors"].items()):
            every = [g for g in sorted(e["generators"]) if g in d["detected"]]
            unseen = [g for g in every if g not in d["trained_on"]]
            groups = [("all", every)] + ([("unseen by the detector", unseen)]
                                         if len(unseen) >= 3 and unseen != every else [])
            for which, gens in groups:
                for estimator, field, key in (("equal n", "equal_n", "mean"),
                                              ("FAD-inf", "fad_inf", "value")):
                    fad = [e["generators"][g][field][key] for g in gens]
                    rate = [d["detected"][g]["detection_rate"] for g in gens]
                    out.append({"embedding": emb, "estimator": estimator, "detector": det,
                                "which": which, "generators": gens,
                                **spearman(fad, rate, seed=seed)})
    return out


# --------------------------------------------------------------------------------------------
# Report


def _f(v: float | None, digits: int = 3, *, fixed: bool = False) -> str:
    """``digits`` significant digits (or decimals with ``fixed``); "-" for None."""
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if fixed else f"{v:.{digits}g}"


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Fréchet Audio Distance per generator", "",
             f"`{result['command']}`", "",
             f"Corpus `{result['corpus']}` (metadata.csv sha256 {result['metadata_sha256'][:12]}); "
             f"clips of {'all splits pooled' if result['split'] == 'all' else result['split'] + ' split'}; "
             "reference: every real clip of them. **equal n**: FAD of n clips of the generator "
             "against all real clips, mean ± sd over seeded draws; **FAD-inf**: the intercept "
             "of FAD = a + b / m over subset sizes m (± the fit's standard error, an "
             "underestimate since the subsets share clips). The **real floor** row is what a "
             "'generator' of real clips reads (n real clips against the others; FAD-inf: one "
             "half against the other): a generator near it is, to this embedding, real "
             "speech. Detection rates: clip verdicts at the detector's own threshold on the "
             "test split; * marks a generator the detector was trained on.", ""]
    detectors = result["detectors"]
    for name, e in sorted(result["embeddings"].items()):
        lines += [f"## {name}", "", f"{e['description']}; {e['dims']} dims; {e['n_real']} real "
                  f"clips; {e['skipped']} clips not embedded (silent or too short); "
                  f"{e['seconds']:.0f} s to embed.", ""]
        head = "| generator | kind | clips | FAD, equal n | FAD-inf (R²) |"
        sep = "| --- | --- | ---: | ---: | ---: |"
        for det in sorted(detectors):
            head += f" {det} detected (n) |"
            sep += " ---: |"
        lines += [head, sep]
        gens = sorted(e["generators"], key=lambda g: e["generators"][g]["equal_n"]["mean"])
        for g in gens:
            r = e["generators"][g]
            eq, inf = r["equal_n"], r["fad_inf"]
            row = (f"| {g} | {r['kind']} | {r['clips']} | {_f(eq['mean'])} ± {_f(eq['sd'])} "
                   f"(n {eq['n']}, {eq['draws']} draws) | {_f(inf['value'])} ± {_f(inf['se'])} "
                   f"({_f(inf['r2'], 2, fixed=True)}) |")
            for det in sorted(detectors):
                d = detectors[det]["detected"].get(g)
                star = "*" if g in detectors[det]["trained_on"] else ""
                row += f" {d['detection_rate']:.0%}{star} ({d['n']}) |" if d else " - |"
            lines.append(row)
        fl = e["real_floor"]
        row = (f"| *real floor* | real | {e['n_real']} | {_f(fl['equal_n']['mean'])} ± "
               f"{_f(fl['equal_n']['sd'])} (n {fl['equal_n']['n']}) | "
               f"{_f(fl['fad_inf']['value'])} ± {_f(fl['fad_inf']['se'])} "
               f"({_f(fl['fad_inf']['r2'], 2, fixed=True)}) |")
        for det in sorted(detectors):
            fa = detectors[det]["false_alarms"]
            total = sum(v["n"] for v in fa.values())
            rate = sum(v["n"] * v["false_alarm_rate"] for v in fa.values()) / max(total, 1)
            row += f" false alarms {rate:.0%} ({total}) |"
        lines.append(row)
        if e["too_few_clips"]:
            lines += ["", f"Too few clips to measure: {e['too_few_clips']}."]
        lines.append("")
    if detectors:
        lines += ["## Detectors", ""]
        for det, d in sorted(detectors.items()):
            lines.append(f"- **{det}**: {d['note']}; threshold {d['threshold']:.3f}, test EER "
                         f"{_f(d['eer'], 3, fixed=True)}; trained on {', '.join(d['trained_on']) or '-'}.")
        lines += ["", "## Does a closer generator get caught less often?", "",
                  "Spearman's rho between FAD and detection rate across generators (positive: "
                  "the generators nearer real speech are caught less often), with its exact "
                  "two-sided permutation p-value.", "",
                  "| embedding | estimator | detector | generators | k | rho | p |",
                  "| --- | --- | --- | --- | ---: | ---: | ---: |"]
        for c in result["correlations"]:
            lines.append(f"| {c['embedding']} | {c['estimator']} | {c['detector']} | "
                         f"{c['which']} | {c['k']} | "
                         f"{_f(c['rho'], 2, fixed=True)} | {_f(c['p'], 3, fixed=True)} |")
        lines += ["", CAVEAT]
    return "\n".join(lines) + "\n"


def write(out: Path, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "fad.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n",
                                  encoding="utf-8")
    (out / "fad.md").write_text(markdown(result), encoding="utf-8")


def _previous(out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The embeddings and detectors of an earlier run with the same corpus and settings."""
    path = out / "fad.json"
    if not path.is_file():
        return {"embeddings": {}, "detectors": {}}
    old = json.loads(path.read_text(encoding="utf-8"))
    if old.get("settings") != settings or old.get("metadata_sha256") != settings["metadata_sha256"]:
        print(f"{path}: made from another corpus state or other settings; starting afresh.",
              file=sys.stderr)
        return {"embeddings": {}, "detectors": {}}
    return {"embeddings": old.get("embeddings", {}), "detectors": old.get("detectors", {})}


# --------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.audio_fad",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the corpus (metadata.csv)")
    p.add_argument("--embedding", action="append", default=[],
                   help="resemblyzer (default), detector:MODEL_ID, vggish or pann (repeatable)")
    p.add_argument("--detector", action="append", default=[],
                   help="a detector whose detection rate per generator goes beside the FAD "
                        "(repeatable)")
    p.add_argument("--config", action="append", type=Path, default=[],
                   help="extra config file or folder (repeatable)")
    p.add_argument("--split", choices=SPLIT_CHOICES, default="all",
                   help="the clips FAD is measured on (default: all splits pooled)")
    p.add_argument("--n", type=int, default=None,
                   help="clips per generator for the equal-n FAD (default: the smallest "
                        "generator's count)")
    p.add_argument("--draws", type=int, default=20, help="seeded draws per estimate")
    p.add_argument("--steps", type=int, default=6, help="subset sizes for FAD-inf")
    p.add_argument("--min-clips", type=int, default=20,
                   help="generators with fewer embedded clips are listed, not measured")
    p.add_argument("--measure", action="store_true",
                   help="measure detection rates here even when the card has them")
    p.add_argument("--out", type=Path, default=None, help="default: the corpus folder")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="features and embeddings cache (default: data/feature_cache)")
    p.add_argument("--fad-ckpt-dir", type=Path, default=None,
                   help="where frechet-audio-distance keeps its downloaded weights")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start = time.time()
    names = args.embedding or ["resemblyzer"]
    out = args.out or args.data
    cache = args.cache_dir or Path(__file__).resolve().parents[2] / "data" / "feature_cache"
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    words = argv if argv is not None else sys.argv[1:]
    command = "python -m training.audio_fad " + " ".join(shlex.quote(str(w)) for w in words)
    clips, by_path = clips_of(args.data, args.split)
    settings = {"metadata_sha256": sha256(args.data / "metadata.csv"), "split": args.split,
                "n": args.n, "draws": args.draws, "steps": args.steps,
                "min_clips": args.min_clips, "seed": args.seed}
    merged = _previous(out, settings)
    for name in names:
        embedder = embeddings.make(name, config=args.config, cache_dir=cache,
                                   fad_ckpt_dir=args.fad_ckpt_dir)
        emb = embeddings.embed_cached(embedder, clips, cache)
        table = fad_per_generator(emb, by_path, n=args.n, draws=args.draws, steps=args.steps,
                                  min_clips=args.min_clips, seed=args.seed)
        merged["embeddings"][embedder.name] = {"description": embedder.description,
                                               "skipped": emb.skipped, "seconds": emb.seconds,
                                               **table}
        print(f"{embedder.name}: {len(emb.paths)} clips embedded, {emb.skipped} skipped",
              file=sys.stderr)
    for model_id in args.detector:
        merged["detectors"][model_id] = detector_rates(
            model_id, args.data, load_corpus(args.data), config=args.config, cache_dir=cache,
            measure=args.measure)
    result = {"kind": "Fréchet Audio Distance per generator", "corpus": str(args.data),
              "command": command, "split": args.split,
              "metadata_sha256": settings["metadata_sha256"], "settings": settings,
              **merged, "caveat": CAVEAT}
    result["correlations"] = correlations(result, seed=args.seed)
    write(out, result)
    print(markdown(result))
    print(f"written {out / 'fad.md'} and {out / 'fad.json'} in {time.time() - start:.0f} s",
          file=sys.stderr)
    return result
