"""Which clips of a corpus differ between two builds of it, and what made them.

A model card's ``data.details.split_sha256`` says that a rebuilt corpus is not the one the card
was trained on; it cannot say which clips moved. The trainer therefore writes each clip's
sha256 beside the card (``<weights stem>.clips.sha256.gz``, the format of ``sha256sum``), and
the corpus command writes one into each corpus it builds (``clips.sha256``). Comparing a rebuild
with either names the clips that differ, grouped by split, class, source, generator and each
step of the shared chain (:mod:`training.audio.chain`): a step whose arithmetic depends on the
CPU shows up as the group where the clips differ (docs/AUDIO.md, forty-first session).

    python -m training.audio.digests write data/audio_corpus_v3twlk
    python -m training.audio.digests compare data/audio_corpus_v3twlk \\
        weights/audio/audio-whisper-readout.clips.sha256.gz
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .chain import CODECS
from .data import Clip, clip_digests, load_corpus

#: the file the corpus command writes into each corpus it builds
CORPUS_FILE = "clips.sha256"


def write_digests(path: Path, digests: Mapping[str, str]) -> Path:
    """``digests`` (relative path -> sha256) as ``sha256sum`` lines, sorted by path; gzipped
    with no time stamp when ``path`` ends in ``.gz`` (so the same clips give the same bytes)."""
    text = "".join(f"{digests[rel]}  {rel}\n" for rel in sorted(digests)).encode()
    path = Path(path)
    if path.suffix == ".gz":
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
            gz.write(text)
        text = buf.getvalue()
    path.write_bytes(text)
    return path


def read_digests(path: Path) -> dict[str, str]:
    """What :func:`write_digests` wrote (or ``sha256sum`` did): relative path -> sha256."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    out = {}
    for n, line in enumerate(raw.decode().splitlines(), 1):
        if not line.strip():
            continue
        digest, _, rel = line.partition("  ")
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or not rel:
            raise SystemExit(f"{path}, line {n}: expected '<sha256>  <path>' (sha256sum's "
                             f"format), got {line[:80]!r}")
        out[rel] = digest
    return out


def chain_steps(params: str) -> tuple[str, ...]:
    """The shared chain's optional steps a clip went through, from its manifest ``params``
    (``reverb``, ``lowpass``, ``telephone``, ``mp3``, ``opus``); ``plain`` when none."""
    steps = []
    if re.search(r"\breverb=1\b", params):
        steps.append("reverb")
    if re.search(r"\blowpass=\d", params):
        steps.append("lowpass")
    channel = re.search(r"\bchannel=(\S+)", params)
    if channel:
        for step in channel.group(1).split("+"):  # telephone, mp316k, opus12k, none
            codec = re.fullmatch(rf"({'|'.join(CODECS)})\d+k", step)
            if step != "none":
                steps.append(codec.group(1) if codec else step)
    return tuple(steps) or ("plain",)


@dataclass
class Comparison:
    """Clips of this corpus against another build's digests: how many match and differ in
    each group (``groups[kind][name] = [same, differ]``), the differing clips' paths, and the
    paths either side lacks."""

    same: int = 0
    differ: list[str] = field(default_factory=list)
    only_here: list[str] = field(default_factory=list)
    only_there: list[str] = field(default_factory=list)
    groups: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def count(self, kind: str, name: str, differs: bool) -> None:
        cell = self.groups.setdefault(kind, {}).setdefault(name, [0, 0])
        cell[int(differs)] += 1

    def report(self) -> str:
        n = self.same + len(self.differ)
        lines = [f"{len(self.differ)} of {n} clips differ"
                 + (f"; {len(self.only_here)} only here" if self.only_here else "")
                 + (f"; {len(self.only_there)} only in the other build" if self.only_there
                    else "")]
        for kind, cells in self.groups.items():
            lines.append(f"by {kind}:")
            for name, (same, differ) in sorted(cells.items(),
                                               key=lambda kv: -kv[1][1] / sum(kv[1])):
                lines.append(f"  {name:<24} {differ:>6} of {same + differ:<6} "
                             f"{differ / (same + differ):6.1%}")
        if self.differ:
            lines.append("first differing clips: " + ", ".join(self.differ[:5]))
        return "\n".join(lines)


def compare(clips: Sequence[Clip], root: Path, theirs: Mapping[str, str]) -> Comparison:
    """``clips`` (of the corpus at ``root``, their digests read from the files) against another
    build's digests ``theirs``."""
    mine = clip_digests(clips, root)
    out = Comparison(only_there=sorted(set(theirs) - set(mine)))
    by_rel = {os.path.relpath(clip.path, root): clip for clip in clips}
    for rel, clip in sorted(by_rel.items()):
        if rel not in theirs:
            out.only_here.append(rel)
            continue
        differs = mine[rel] != theirs[rel]
        if differs:
            out.differ.append(rel)
        else:
            out.same += 1
        out.count("split", clip.split, differs)
        out.count("class", clip.label, differs)
        out.count("source" if clip.label == "real" else "generator",
                  (clip.source if clip.label == "real" else clip.generator) or "?", differs)
        for step in chain_steps(clip.params):
            out.count("chain step", step, differs)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.audio.digests",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help=f"write DATA/{CORPUS_FILE}")
    w.add_argument("data", type=Path, help="a built corpus (metadata.csv)")
    w.add_argument("--out", type=Path, help=f"default DATA/{CORPUS_FILE}")
    c = sub.add_parser("compare", help="name the clips of DATA that differ from DIGESTS")
    c.add_argument("data", type=Path, help="a built corpus (metadata.csv)")
    c.add_argument("digests", type=Path,
                   help="another build's digests (a card's .clips.sha256.gz or a corpus's "
                        f"{CORPUS_FILE})")
    args = parser.parse_args(argv)
    if not (args.data / "metadata.csv").is_file():
        raise SystemExit(f"{args.data} is not a built corpus (no metadata.csv)")
    clips = load_corpus(args.data)
    if args.command == "write":
        path = write_digests(args.out or args.data / CORPUS_FILE,
                             clip_digests(clips, args.data))
        print(f"{len(clips)} clips: {path}")
        return 0
    result = compare(clips, args.data, read_digests(args.digests))
    print(result.report())
    return 1 if result.differ or result.only_here or result.only_there else 0


if __name__ == "__main__":
    raise SystemExit(main())
