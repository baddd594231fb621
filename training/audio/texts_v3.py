"""Texts for the extracted real sources (:mod:`training.audio.sources_v3`), so that the
synthesisers can read what the real clips say, and where no text can be had, sentences of the
same language from a base corpus.

Each text carries where it came from (``text_origin``), and a guess is never called a
transcript:

- ``subtitle``: the game's own on-screen line for the recording: Flight of the Amazon Queen's
  dialogues (the ``*.DOG`` resources of ``queen.1c``, read as ScummVM's ``Talk::load`` and
  ``Talk::speak`` do: a line is split at its ``*`` commands, and piece ``k`` of the line
  ``head`` of the dialogue ``talkKey`` is the voice file ``%2d%4x{P|J}%1x``), Warzone 2100's
  tutorial (``script/tutorial.js`` in ``base.wz``: ``{"audio": "tut3.ogg", "message":
  _("...")}``);
- ``file_name``: what the package names the recording: Hedgewars' English voice files
  (``Watchthis.ogg`` -> "watch this", split into words with Festival's CMU word list),
  Warzone 2100's sound table (``audio/audio.cfg``: ``audio "pcv337.ogg" ... /*Structure Under
  Attack*/``), Kajongg's tile and call files (``s4.ogg`` -> the game's own tile name "stone 4",
  through its translation catalogue for the German voices);
- ``pool``: a sentence in the clip's language from the base corpus's *training* clips (never a
  held-out clip's text); ``textbank``: Tux Paint's translated descriptions where the base corpus
  has no text in the language (Polish).

Not read (their clips get ``pool`` texts): Flight of the Amazon Queen's ``JOE*`` lines and
cut scenes (their texts are in ``QUEEN.JAS`` and the ``*.CUT`` resources), Hedgewars'
Russian, Polish and Spanish packs (their file names are the English event names, not what is
said), MegaGlest's acknowledgements (numbered, no text), Warzone's cut sequences and the
sounds its tables do not describe.
"""

from __future__ import annotations

import gettext
import re
import struct
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

TEXT_ORIGINS = ("transcript", "subtitle", "file_name", "pool", "textbank")
CMU_WORDS = Path("/usr/share/festival/dicts/cmu/cmudict-0.4.out")
QUEEN_DATA = "flight-of-the-amazon-queen/usr/share/scummvm/flight-of-the-amazon-queen/queen.1c"
WARZONE_ARCHIVE = "warzone2100-data/usr/share/games/warzone2100/base.wz"
KAJONGG_ROOT = "kajongg/usr/share"
# the game's own English strings: the everyday words that split its voice files' names
HEDGEWARS_ENGLISH = ("hedgewars-data/usr/share/games/hedgewars/Data/Locale/en.txt",
                     "hedgewars-data/usr/share/games/hedgewars/Data/Locale/campaigns_en.txt")
# the language of a source whose language is undetermined (MegaGlest's short acknowledgements
# sound English) when a synthesiser must read something in its place
READ_AS = {"und": "en"}


@dataclass(frozen=True)
class Text:
    """A clip's text and where it came from."""

    text: str
    origin: str  # one of TEXT_ORIGINS

    def __post_init__(self) -> None:
        if self.origin not in TEXT_ORIGINS:
            raise ValueError(f"unknown text origin {self.origin!r}; one of {TEXT_ORIGINS}")


# --------------------------------------------------------------------------------------------
# Hedgewars: English voice files named after what they say


@lru_cache(maxsize=1)
def cmu_words(path: Path = CMU_WORDS) -> frozenset[str]:
    """The words of Festival's CMU dictionary (lower case, apostrophes dropped as it does)."""
    if not Path(path).is_file():
        return frozenset()
    words = set()
    with open(path, encoding="latin-1") as fh:
        for line in fh:
            m = re.match(r'\("([a-z]+)"', line)
            if m:
                words.add(m.group(1))
    return frozenset(words)


def split_words(name: str, words: frozenset[str] | set[str],
                common: frozenset[str] | set[str] = frozenset()) -> str:
    """``"Watchthis"`` -> ``"watch this"``: the split into ``words`` with the fewest words not
    in ``common`` (everyday words, so "come on then" rather than "com eon then"), then the
    fewest words, then the longest; a part with no split is kept as it is written ("Nooo").
    Hyphens separate (``Uh-oh``); a trailing number (``Jump1``) is dropped."""
    out: list[str] = []
    for part in re.split(r"[-_\s]+", re.sub(r"\d+$", "", name).lower()):
        n = len(part)
        best: list[tuple[int, int, int, list[str]] | None] = [None] * (n + 1)
        best[0] = (0, 0, 0, [])
        for end in range(1, n + 1):
            for start in range(max(0, end - 20), end):
                word, prev = part[start:end], best[start]
                if prev is None or word not in words or (len(word) == 1 and word not in "ai"):
                    continue
                cost = (prev[0] + 1, prev[1] + (word not in common), prev[2] - len(word) ** 2,
                        prev[3] + [word])
                if best[end] is None or cost[:3] < best[end][:3]:
                    best[end] = cost
        out += best[n][3] if best[n] is not None else ([part] if part else [])
    return " ".join(out)


def hedgewars_text(origin: str, language: str, words: frozenset[str],
                   common: frozenset[str] = frozenset()) -> Text | None:
    """The English packs say their file's name; the other languages' packs do not."""
    if language != "en":
        return None
    text = split_words(Path(origin).stem, words, common)
    return Text(text, "file_name") if text else None


def common_words(texts: Iterable[str]) -> frozenset[str]:
    """Lower-case words of some texts, apostrophes dropped as the CMU list drops them."""
    return frozenset(w.replace("'", "") for t in texts for w in re.findall(r"[a-z']+", t.lower()))


# --------------------------------------------------------------------------------------------
# Flight of the Amazon Queen: the dialogue files

DOG_HEADER = 20  # ScummVM's DOG_HEADER_SIZE (an "AmBk" bank header)


def _strings(b: bytes, offset: int, count: int) -> dict[int, str]:
    """``Talk::findDialogueString``'s table: ``count`` entries of (2 bytes, a big-endian id, a
    length byte and the text, padded to 4 bytes)."""
    out = {}
    for _ in range(count):
        offset += 2
        ident = struct.unpack(">h", b[offset:offset + 2])[0]
        offset += 2
        n = b[offset]
        offset += 1
        out[ident] = b[offset:offset + n].decode("latin-1")
        if n:
            offset = (offset + n + 3) & ~3
    return out


def queen_segments(sentence: str) -> list[str]:
    """A line split as ``Talk::speak`` splits it: at each ``*`` followed by a 2-character
    command (``*XY`` by 11 more: a position); each piece has a voice file of its own."""
    pieces, start, i = [], 0, 0
    while i < len(sentence):
        if sentence[i] == "*":
            pieces.append(sentence[start:i])
            cmd = sentence[i + 1:i + 3]
            i += 3 + (11 if cmd == "XY" else 0)
            start = i
        else:
            i += 1
    if start != i:
        pieces.append(sentence[start:i])
    return pieces


def dog_texts(data: bytes) -> dict[str, Text]:
    """Voice file stem (``020001P2``) -> its on-screen text, from one ``*.DOG`` resource: the
    other person's lines (``P``) and Joe's (``J``)."""
    b = data[DOG_HEADER:]
    level, _unique, talk_key, j_max, p_max = struct.unpack(">5h", b[:10])
    person = struct.unpack(">H", b[22:24])[0]
    out: dict[str, Text] = {}
    for who, table in (("P", _strings(b, person, p_max)),
                       ("J", _strings(b, 32 + abs(level) * 96, j_max))):
        for head, sentence in table.items():
            for k, piece in enumerate(queen_segments(sentence), 1):
                stem = f"{talk_key:2d}{head:4x}{who}{k:1x}".replace(" ", "0").upper()
                if piece.strip():
                    out[stem] = Text(piece.strip(), "subtitle")
    return out


def fotaq_texts(path: Path) -> dict[str, Text]:
    """Every dialogue line's text in ``queen.1c`` by voice file stem."""
    from .sources_v3 import queen_table

    if not Path(path).is_file():
        return {}
    data = Path(path).read_bytes()
    out: dict[str, Text] = {}
    for e in queen_table(data)[1]:
        if e.name.endswith(".DOG"):
            out.update(dog_texts(data[e.offset:e.offset + e.size]))
    return out


def fotaq_text(origin: str, table: Mapping[str, Text]) -> Text | None:
    member = origin.split(":", 1)[-1]
    return None if "#" in member else table.get(member.split(".")[0])


# --------------------------------------------------------------------------------------------
# Warzone 2100: the tutorial's on-screen lines and the sound table's descriptions


def warzone_texts(archive: Path) -> dict[str, Text]:
    """Sound file stem -> its text, from ``base.wz``."""
    if not Path(archive).is_file():
        return {}
    out: dict[str, Text] = {}
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        if "audio/audio.cfg" in names:
            cfg = z.read("audio/audio.cfg").decode("latin-1")
            for stem, text in re.findall(r'audio\s+"([^"]+)\.ogg"[^\n]*?/\*\s*(.*?)\s*\*/', cfg):
                if re.search(r"[A-Za-z]", text):
                    out[stem] = Text(text, "file_name")
        if "script/tutorial.js" in names:
            js = z.read("script/tutorial.js").decode("utf-8")
            for stem, text in re.findall(
                    r'"audio":\s*"([^"]+)\.ogg"[^}]*?"message":\s*_\("((?:[^"\\]|\\.)*)"\)', js):
                out[stem] = Text(text.replace('\\"', '"'), "subtitle")
    return out


def warzone_text(origin: str, table: Mapping[str, Text]) -> Text | None:
    member = origin.split(":", 1)[-1]
    if "#" in member:  # a piece of a longer recording: the whole one's text does not fit
        return None
    return table.get(Path(member).stem)


# --------------------------------------------------------------------------------------------
# Kajongg: tile names and calls, in the game's own words


KAJONGG_GROUPS = {"s": "stone", "b": "bamboo", "c": "character", "d": "dragon"}
KAJONGG_DRAGONS = {"b": "white", "r": "red", "g": "green"}
KAJONGG_WINDS = {"e": "East Wind", "s": "South Wind", "w": "West Wind", "n": "North Wind"}
# the voice file of a call is its message name in lower case without spaces (sound.py)
KAJONGG_CALLS = ("Chow", "Pung", "Kong", "Mah Jongg", "Original Call", "Dangerous Game",
                 "No Choice", "Violates Original Call")
SAME_IN_EVERY_LANGUAGE = ("chow", "pung", "kong", "mah jongg")  # a catalogue may leave these


def kajongg_catalogue(root: Path, language: str) -> gettext.NullTranslations | None:
    """The game's translation catalogue for ``language`` (None: not shipped); English needs
    none."""
    if language == "en":
        return gettext.NullTranslations()
    mo = Path(root) / "locale" / language / "LC_MESSAGES" / "kajongg.mo"
    if not mo.is_file():
        return None
    with open(mo, "rb") as fh:
        return gettext.GNUTranslations(fh)


def kajongg_text(stem: str, catalogue: gettext.NullTranslations | None) -> Text | None:
    """What a voice file names, as the game names it (``tile.py``'s ``Tile.name``,
    ``message.py``'s message names); None where the catalogue lacks the translation (the
    German voice then says something the game does not write down)."""
    if catalogue is None:
        return None

    def tr(context: str | None, msg: str) -> str | None:
        got = catalogue.pgettext(context, msg) if context else catalogue.gettext(msg)
        translated = isinstance(catalogue, gettext.GNUTranslations)
        # an untranslated message is unknown in that language, except the game's own terms
        return None if translated and got == msg and msg.lower() not in SAME_IN_EVERY_LANGUAGE \
            else got

    if len(stem) == 2 and stem[0] == "w" and stem[1] in KAJONGG_WINDS:
        text = tr(None, KAJONGG_WINDS[stem[1]])
    elif len(stem) == 2 and stem[0] == "d" and stem[1] in KAJONGG_DRAGONS:
        group, value = tr("kajongg", "dragon"), tr("kajongg", KAJONGG_DRAGONS[stem[1]])
        text = f"{group} {value}" if group and value else None
    elif len(stem) == 2 and stem[0] in "sbc" and stem[1].isdigit():
        group = tr("kajongg", KAJONGG_GROUPS[stem[0]])
        text = f"{group} {stem[1]}" if group else None
    else:
        calls = {c.lower().replace(" ", ""): c for c in KAJONGG_CALLS}
        text = tr("kajongg", calls[stem]) if stem in calls else None
    return Text(text, "file_name") if text else None


# --------------------------------------------------------------------------------------------
# All of them


def source_texts(rows: Sequence[Mapping[str, str]], raw: Path, *,
                 common: frozenset[str] = frozenset()) -> dict[str, Text]:
    """Extracted clip path (as in the manifest, relative to its root) -> its text, for the
    clips whose package says what they say. ``rows``: the extraction manifest's rows;
    ``raw``: where the packages were unpacked (``data/sources_v3/raw``); ``common``: everyday
    English words for splitting Hedgewars' file names (:func:`common_words`)."""
    raw = Path(raw)
    words = cmu_words()
    common = common | common_words(
        (raw / p).read_text(encoding="utf-8", errors="replace") for p in HEDGEWARS_ENGLISH
        if (raw / p).is_file())
    wz = warzone_texts(raw / WARZONE_ARCHIVE) if any(r["source"] == "warzone" for r in rows) \
        else {}
    queen = fotaq_texts(raw / QUEEN_DATA) if any(r["source"] == "fotaq" for r in rows) else {}
    catalogues: dict[str, gettext.NullTranslations | None] = {}
    out: dict[str, Text] = {}
    for r in rows:
        origin, text = r.get("origin", ""), None
        if r["source"] == "hedgewars":
            text = hedgewars_text(origin, r["language"], words, common)
        elif r["source"] == "warzone":
            text = warzone_text(origin, wz)
        elif r["source"] == "fotaq":
            text = fotaq_text(origin, queen)
        elif r["source"] == "kajongg":
            lang = r["language"]
            if lang not in catalogues:
                catalogues[lang] = kajongg_catalogue(raw / KAJONGG_ROOT, lang)
            text = kajongg_text(Path(origin).stem, catalogues[lang])
        if text is not None:
            out[r["path"]] = text
    return out


def text_pool(rows: Sequence[Mapping[str, str]]) -> dict[str, list[str]]:
    """Sentences per language from a base corpus's metadata rows of the *training* split
    (real clips' texts and the text-bank sentences its synthesisers read there), sorted,
    duplicates dropped: no held-out clip's text."""
    pool: dict[str, set[str]] = {}
    for r in rows:
        text = (r.get("text") or "").strip()
        if r.get("split") == "train" and text:
            pool.setdefault(r["language"], set()).add(text)
    return {lang: sorted(v) for lang, v in sorted(pool.items())}


def pick_text(language: str, rng: np.random.Generator, pool: Mapping[str, Sequence[str]],
              bank: Mapping[str, Sequence[str]]) -> Text | None:
    """A sentence in ``language`` from the pool, else from the text bank; None if neither
    has one."""
    lang = READ_AS.get(language, language)
    if pool.get(lang):
        return Text(pool[lang][int(rng.integers(len(pool[lang])))], "pool")
    if bank.get(lang):
        return Text(bank[lang][int(rng.integers(len(bank[lang])))], "textbank")
    return None
