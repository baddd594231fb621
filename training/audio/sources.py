"""Speech recorded by people, from Debian packages (the real class of corpus v2), and the
per-language text bank the synthesisers read when no real clip's text is speakable.

Each reader returns `Speech` records: source, language (base ISO 639-1 code), locale, file,
text ("" where unknown), speaker ("" where unknown) and licence. A source whose package is
missing gives an empty list; :func:`read_sources` warns and goes on. Install lines:
``../shared/DATA.md``.
"""

from __future__ import annotations

import gzip
import html
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .corpus import KLETTRES_ROOT, read_klettres

TUXPAINT_ROOT = Path("/usr/share/tuxpaint/stamps")
FILLETS_ROOT = Path("/usr/share/games/fillets-ng")
ASTERISK_ROOT = Path("/usr/share/asterisk/sounds")
ASTERISK_TEXTS = Path("/usr/share/doc")  # asterisk-core-sounds-<lang>/core-sounds-<lang>.txt.gz
KTUBERLING_ROOT = Path("/usr/share/ktuberling/sounds")
GCIN_ROOT = Path("/usr/share/gcin-voice/ogg")

# source -> (apt packages, licence)
PACKAGES = {
    "klettres": ("klettres-data", "GPL-2+"),
    "tuxpaint": ("tuxpaint-stamps-default", "GPL-2"),
    "fillets": ("fillets-ng-data fillets-ng-data-cs fillets-ng-data-nl", "GPL-2"),
    "asterisk": ("asterisk-core-sounds-{en,es,fr,it,ru}-wav asterisk-core-sounds-{en,es,fr,it,ru}"
                 " asterisk-prompt-it-menardi-wav", "CC-BY-SA-3.0"),
    "ktuberling": ("ktuberling-data", "GPL-2+"),
    "gcin": ("gcin-voice", "GPL-3 / CC-BY-3.0"),
}
# Sources whose texts no synthesiser can read aloud: gcin's are Bopomofo syllables (and
# KTuberling's are unknown: its files are named by the English word, so its texts are empty).
UNSPEAKABLE = frozenset({"gcin"})


@dataclass(frozen=True)
class Speech:
    """One recording by a person."""

    source: str
    language: str  # base code: en, pt, zh, ...
    path: Path
    text: str = ""
    speaker: str = ""
    locale: str = ""  # the source's own code where it says more (en_GB, pt_BR, es_MX)

    @property
    def licence(self) -> str:
        return PACKAGES.get(self.source, ("", "unknown"))[1]

    @property
    def speakable(self) -> bool:
        return self.source not in UNSPEAKABLE and bool(self.text.strip())


def base_language(code: str) -> str:
    """``pt_BR`` -> ``pt``, ``sr@latin`` -> ``sr``, ``zh_CN`` -> ``zh``, ``en_US`` -> ``en``."""
    return re.split(r"[_@.-]", code)[0].lower()


def read_klettres_speech(root: Path = KLETTRES_ROOT) -> list[Speech]:
    """KLettres letters and syllables (v1's reader); a handful of speakers per language."""
    if not Path(root).is_dir():
        return []
    return [Speech("klettres", base_language(r.language), r.path, r.text,
                   f"klettres-{r.language}", r.language) for r in read_klettres(root)]


def _tuxpaint_texts(txt: Path) -> dict[str, str]:
    """``<stamp>.txt``: the English description on the first line, then ``xx.utf8=...``."""
    texts: dict[str, str] = {}
    try:
        lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return texts
    if lines and "=" not in lines[0].split(" ")[0]:
        texts["en"] = lines[0].strip()
    for line in lines[1:]:
        m = re.match(r"^([A-Za-z_@]+)\.utf8=(.*)$", line.strip())
        if m and m.group(2).strip():
            texts[m.group(1)] = m.group(2).strip()
    return texts


def read_tuxpaint(root: Path = TUXPAINT_ROOT) -> list[Speech]:
    """Spoken stamp descriptions ``<stamp>_desc[_<locale>].(ogg|wav)`` (never the sound
    effects), with the text of that locale from ``<stamp>.txt``."""
    out = []
    if not Path(root).is_dir():
        return out
    for path in sorted(Path(root).rglob("*_desc*")):
        m = re.match(r"^(.*)_desc(?:_([A-Za-z]{2,3}(?:_[A-Z]{2})?))?\.(ogg|wav)$", path.name)
        if not m:
            continue  # e.g. a doubled extension
        stamp, locale = m.group(1), m.group(2) or "en"
        texts = _tuxpaint_texts(path.with_name(stamp + ".txt"))
        text = texts.get(locale) or texts.get(base_language(locale), "")
        out.append(Speech("tuxpaint", base_language(locale), path, text, "", locale))
    return out


_DIALOG_ID = re.compile(r'dialogId\("([^"]+)",\s*"[^"]*",\s*"((?:[^"\\]|\\.)*)"\)')
_DIALOG_STR = re.compile(r'dialogStr\("((?:[^"\\]|\\.)*)"\)')


def _fillets_texts(script: Path, language: str) -> dict[str, str]:
    """Dialogue id -> text from ``script/<level>/dialogs_<lang>.lua`` (English: the id's own
    text in ``dialogs_en.lua`` or ``dialogs.lua``)."""
    texts: dict[str, str] = {}
    for name in ((f"dialogs_{language}.lua",) if language != "en"
                 else ("dialogs_en.lua", "dialogs.lua")):
        path = script / name
        if not path.is_file():
            continue
        src = path.read_text(encoding="utf-8", errors="replace")
        for m in _DIALOG_ID.finditer(src):
            rest = src[m.end():m.end() + 400]
            translated = _DIALOG_STR.match(rest.lstrip())
            text = translated.group(1) if (translated and language != "en") else m.group(2)
            texts.setdefault(m.group(1), text.replace('\\"', '"'))
    return texts


def read_fillets(root: Path = FILLETS_ROOT) -> list[Speech]:
    """Fish Fillets NG dialogue ``sound/<level>/<lang>/<id>.ogg``; the speaker is the
    character code in the id (``let-m-oko``: m, the small fish) within the language's cast."""
    out = []
    sound = Path(root) / "sound"
    if not sound.is_dir():
        return out
    for level in sorted(p for p in sound.iterdir() if p.is_dir()):
        for lang_dir in sorted(p for p in level.iterdir() if p.is_dir()):
            lang = lang_dir.name
            texts = _fillets_texts(Path(root) / "script" / level.name, lang)
            for path in sorted(lang_dir.glob("*.ogg")):
                parts = path.stem.split("-")
                who = parts[1] if len(parts) > 2 else "x"
                out.append(Speech("fillets", lang, path, texts.get(path.stem, ""),
                                  f"fillets-{lang}-{who}", lang))
    return out


def _asterisk_texts(lang: str, docs: Path) -> dict[str, str]:
    path = docs / f"asterisk-core-sounds-{lang}" / f"core-sounds-{lang}.txt.gz"
    texts: dict[str, str] = {}
    if not path.is_file():
        return texts
    for line in gzip.open(path, "rt", encoding="utf-8", errors="replace"):
        name, sep, text = line.partition(":")
        text = text.strip()
        # "[this is a simple beep tone]": not speech
        if sep and not name.startswith(";") and text and not text.startswith("["):
            texts[name.strip()] = text
    return texts


def read_asterisk(root: Path = ASTERISK_ROOT, docs: Path = ASTERISK_TEXTS) -> list[Speech]:
    """Asterisk prompts ``<locale>_<f|m>_<Name>/**.wav`` (8 kHz telephone band, one
    professional voice each); only prompts whose text the core-sounds list gives."""
    out = []
    if not Path(root).is_dir():
        return out
    named = re.compile(r"^[a-z]{2}_[A-Z]{2}_[fm]_")  # en_US_f_Allison; not the symlinks
    for voice in sorted(p for p in Path(root).iterdir()
                        if p.is_dir() and not p.is_symlink() and named.match(p.name)):
        locale = "_".join(voice.name.split("_")[:2])
        lang = base_language(locale)
        texts = _asterisk_texts(lang, docs)
        for path in sorted(voice.rglob("*.wav")):
            name = path.relative_to(voice).with_suffix("").as_posix()
            if name in texts:
                out.append(Speech("asterisk", lang, path, texts[name],
                                  f"asterisk-{voice.name.split('_', 3)[-1]}", locale))
    return out


_KTUBERLING_SOUND = re.compile(r'<sound\s+name="([^"]*)"\s+file="([^"]*)"')


def read_ktuberling(root: Path = KTUBERLING_ROOT) -> list[Speech]:
    """KTuberling words, one person per language. The four Serbian folders hold one speaker:
    only ``sr`` is read. The text is unknown (``name`` is the English word, kept nowhere)."""
    out = []
    if not Path(root).is_dir():
        return out
    for theme in sorted(Path(root).glob("*.soundtheme")):
        code = theme.stem
        if "@" in code:
            continue
        lang = base_language(code)
        files = _KTUBERLING_SOUND.findall(theme.read_text(encoding="utf-8", errors="replace"))
        for _name, file in files:
            path = Path(root) / html.unescape(file)
            if path.is_file():
                out.append(Speech("ktuberling", lang, path, "", f"ktuberling-{code}", code))
    return out


def read_gcin(root: Path = GCIN_ROOT) -> list[Speech]:
    """gcin Mandarin syllables ``<Bopomofo + tone>/<speaker>.ogg`` (two speakers)."""
    out = []
    if not Path(root).is_dir():
        return out
    for path in sorted(Path(root).glob("*/*.ogg")):
        out.append(Speech("gcin", "zh", path, path.parent.name, f"gcin-{path.stem}", "zh_TW"))
    return out


READERS: dict[str, Callable[[], list[Speech]]] = {
    "klettres": read_klettres_speech, "tuxpaint": read_tuxpaint, "fillets": read_fillets,
    "asterisk": read_asterisk, "ktuberling": read_ktuberling, "gcin": read_gcin,
}


def read_sources(names: Iterable[str] = tuple(READERS), *,
                 readers: dict[str, Callable[[], list[Speech]]] | None = None,
                 warn: Callable[[str], None] | None = None) -> dict[str, list[Speech]]:
    """The recordings of each named source; a source with none installed is skipped with a
    warning naming its apt packages."""
    readers = readers or READERS
    warn = warn or (lambda msg: sys.stderr.write(msg + "\n"))
    found: dict[str, list[Speech]] = {}
    for name in names:
        speech = readers[name]() if name in readers else []
        if not speech:
            warn(f"  {name}: no recordings found, skipped (apt-get install "
                 f"{PACKAGES.get(name, ('?',))[0]}; see ../shared/DATA.md)")
            continue
        found[name] = speech
    return found


def text_bank(root: Path = TUXPAINT_ROOT) -> dict[str, list[str]]:
    """Sentences per base language from Tux Paint's stamp descriptions (about 80 locales):
    what a synthesiser reads in a language no real clip's text covers (Hindi, Finnish,
    Japanese, Mandarin in characters). Sorted, duplicates dropped."""
    bank: dict[str, set[str]] = {}
    if not Path(root).is_dir():
        return {}
    for txt in Path(root).rglob("*.txt"):
        for locale, text in _tuxpaint_texts(txt).items():
            if "@" in locale or len(text) < 4:
                continue
            bank.setdefault(base_language(locale), set()).add(text)
    return {lang: sorted(texts) for lang, texts in sorted(bank.items())}
