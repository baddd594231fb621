"""Every committed model card's Markdown is what the renderer makes of its JSON: the page a person
reads in the repository says what the card the app loads says."""

import json
from pathlib import Path

import pytest

from training.cards import markdown
from xai_platform.models.cards import ModelCard

ROOT = Path(__file__).resolve().parents[1]
CARDS = sorted((ROOT / "weights").rglob("*.card.json"))


def test_cards_are_committed():
    assert len(CARDS) >= 10


@pytest.mark.parametrize("card_json", CARDS, ids=[p.name for p in CARDS])
def test_card_markdown_matches_its_json(card_json: Path):
    card = ModelCard.from_dict(json.loads(card_json.read_text(encoding="utf-8")), strict=True)
    md = card_json.with_name(card_json.name.replace(".card.json", ".card.md"))
    assert md.is_file(), f"{md.name} is missing; render it with training.cards.markdown"
    assert md.read_text(encoding="utf-8") == markdown(card), (
        f"{md.name} is stale: re-render it from {card_json.name} with training.cards.markdown")
