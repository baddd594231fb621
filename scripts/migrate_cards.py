"""Rewrite the shipped model cards (``weights/**/*.card.json``) in the `ModelCard` layout.

Run once after a change of card keys: ``python scripts/migrate_cards.py``. Only key names and
nesting change (`ModelCard.from_dict` reads the old layouts); no figure is recomputed, so no
model is retrained. ``--check`` lists the cards not yet in the new layout and exits 1 if any.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xai_platform.models.cards import ModelCard  # noqa: E402


def migrate(path: Path, *, write: bool) -> bool:
    """True when ``path`` is not (or was not) in the new layout."""
    old = json.loads(path.read_text(encoding="utf-8"))
    new = ModelCard.from_dict(old, strict=True).to_dict()
    if new == old:
        return False
    if write:
        path.write_text(json.dumps(new, indent=2) + "\n", encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=ROOT / "weights")
    parser.add_argument("--check", action="store_true", help="report, write nothing")
    args = parser.parse_args(argv)
    changed = [p for p in sorted(args.weights.rglob("*.card.json"))
               if migrate(p, write=not args.check)]
    for path in changed:
        print(f"{'old layout' if args.check else 'migrated'}: {path.relative_to(args.weights)}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
