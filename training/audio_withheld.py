"""Does a detector's familiarity check withhold the verdicts it would get wrong?

    python -m training.audio_withheld --model audio-cnn --data data/audio_corpus_v2 \\
        --per-group 150 --out docs/audio-v3/withheld_audio-cnn

Every clip goes through the app's own path (:func:`training.audio.false_alarms.verdicts`:
speech check, windows, the card's threshold or the segment rule, the familiarity check). Per
generator (fakes) and source (real speech) of a labelled corpus (``metadata.csv`` with
``label``; corpus v1 or v2) or of the extracted v3 sources (all real), it reports the share
withheld and the error rate of the verdicts with and without the check: a check that withholds
wrong verdicts more often than right ones makes the verdicts that remain more trustworthy; one
that withholds both alike only answers less often. ``--split`` keeps some splits (repeatable;
default all).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .audio.false_alarms import sample_rows, verdicts


def read_rows(root: Path, splits: Sequence[str]) -> list[dict[str, Any]]:
    """Clips of a labelled corpus (``metadata.csv``) or of the extracted v3 sources
    (``manifest.jsonl``, real speech), each with ``path``, ``label`` and ``group`` (the
    generator of a fake, the source of real speech)."""
    if (root / "metadata.csv").is_file():
        from .audio.corpus_v2 import read_metadata

        rows = [r for r in read_metadata(root / "metadata.csv")
                if not splits or r.get("split") in splits]
    else:
        from .audio.sources_v3 import read_manifest

        rows = [dict(r, label="real") for r in read_manifest(root)]
    for r in rows:
        source = r.get("source") or r.get("language") or "speech"
        r["group"] = f"fake: {r['generator']}" if r["label"] == "fake" else f"real: {source}"
    return rows


def sample_groups(rows: Sequence[dict[str, Any]], per_group: int | None, *, seed: int
                  ) -> list[dict[str, Any]]:
    """At most ``per_group`` rows of each group (seeded), in the rows' order."""
    keyed = [{"source": r["group"], "language": "", "row": r} for r in rows]
    return [k["row"] for k in sample_rows(keyed, per_group, seed=seed)]


def table(rows: Sequence[dict[str, Any]], answers: Sequence[dict[str, Any]]
          ) -> dict[str, dict[str, Any]]:
    """Per group and for all: clips, refused, withheld, the error rate of every verdict the
    model would give (``wrong_all``) and of those the check lets through (``wrong_given``),
    and the share of wrong and of right verdicts withheld."""
    groups: dict[str, list[int]] = {"all": list(range(len(rows)))}
    for i, r in enumerate(rows):
        groups.setdefault(r["group"], []).append(i)
    out = {}
    for name, idx in sorted(groups.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        judged = [(rows[i]["label"], answers[i]) for i in idx if answers[i]["verdict"] != "refused"]
        wrong = [a["withheld"] for label, a in judged if a["verdict"] != label]
        right = [a["withheld"] for label, a in judged if a["verdict"] == label]
        given_wrong = sum(not w for w in wrong)
        given = given_wrong + sum(not w for w in right)
        out[name] = {
            "n": len(idx), "refused": len(idx) - len(judged),
            "withheld": sum(a["withheld"] for _, a in judged),
            "wrong_all": len(wrong) / len(judged) if judged else None,
            "wrong_given": given_wrong / given if given else None,
            "wrong_withheld": sum(wrong) / len(wrong) if wrong else None,
            "right_withheld": sum(right) / len(right) if right else None,
        }
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Verdicts withheld by `{result['model']}`'s familiarity check",
             "", f"Data: `{result['data']}` (splits: {', '.join(result['splits']) or 'all'}; at "
             f"most {result['per_group']} clips per group, seed {result['seed']}); threshold "
             f"{result['threshold']}. Command: `{result['command']}`", "",
             "| group | clips (refused) | withheld | wrong, every verdict | wrong, verdicts given "
             "| wrong verdicts withheld | right verdicts withheld |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, t in result["groups"].items():
        judged = t["n"] - t["refused"]
        bold = "**" if name == "all" else ""
        lines.append(f"| {bold}{name}{bold} | {t['n']} ({t['refused']}) | "
                     f"{_pct(t['withheld'] / judged if judged else None)} | "
                     f"{_pct(t['wrong_all'])} | {bold}{_pct(t['wrong_given'])}{bold} | "
                     f"{_pct(t['wrong_withheld'])} | {_pct(t['right_withheld'])} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, result: dict[str, Any], text: str) -> None:
    """``OUT.json`` (the result) and ``OUT.md`` (``text``), which is also printed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(text)
    print(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.audio_withheld",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", action="append", default=[])
    parser.add_argument("--per-group", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.md and OUT.json")
    args = parser.parse_args(argv)

    from xai_platform.config import load_config
    from xai_platform.models.manager import ModelManager

    config = load_config(args.config)
    model = ModelManager(config, device="cpu").get(args.model)
    if model.familiarity is None:
        raise SystemExit(f"'{args.model}' has no familiarity check; fit one with "
                         "python -m training.familiarity first.")
    rows = sample_groups(read_rows(args.data, args.split), args.per_group, seed=args.seed)
    answers = verdicts(model, rows, args.data, config.app,
                       log=lambda m: (sys.stderr.write(m), sys.stderr.flush()))
    sys.stderr.write("\n")
    result = {"model": args.model, "data": str(args.data), "splits": args.split,
              "per_group": args.per_group, "seed": args.seed,
              "threshold": model.calibration.threshold,
              "command": "python -m training.audio_withheld " + shlex.join(
                  list(argv if argv is not None else sys.argv[1:])),
              "groups": table(rows, answers)}
    write_report(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
