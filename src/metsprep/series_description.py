"""Read an MR Series Description: tokens, canonical text and contrast, in many languages.

The lexicon (`metsprep/data/sequence_lexicon.yaml`, its header gives the order of lookups)
maps spellings to canonical tokens. `read_description` returns what the classifier needs: the
canonical text that the ordered rule table is matched against, and the contrast state
(pre / post / both / none) with the words that decided it, a negation scoping over the
contrast word it precedes ("ohne KM", "sans gado", "W/O contrast").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

#: Canonical markers the rule table sees in place of the words that decided the contrast.
POST_MARKER = "POSTCONTRAST"
PRE_MARKER = "PRECONTRAST"
_LETTER_FOLDS = str.maketrans({"ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "ß": "ss", "œ": "oe", "Œ": "OE",
                               "đ": "d", "ł": "l", "Ł": "L"})  # fmt: skip


@dataclass(frozen=True)
class Lexicon:
    """The token lexicon, as sets of canonical upper-case spellings."""

    dropped: frozenset[str]
    dropped_patterns: tuple[re.Pattern[str], ...]
    phrases: tuple[tuple[tuple[str, ...], str], ...]  # (token run, canonical), longest first
    synonyms: Mapping[str, str]  # spelling -> canonical
    synonyms_after: tuple[tuple[str, str, str], ...]  # (spelling, token right before it, canonical)
    contrast_agent: frozenset[str]
    post: frozenset[str]
    post_alone: frozenset[str]
    pre: frozenset[str]
    pre_alone: frozenset[str]
    with_words: frozenset[str]
    negation: frozenset[str]
    negation_alone: frozenset[str]
    compound_pieces: frozenset[str]
    weighting_pieces: frozenset[str]
    negation_scope: int

    def is_dropped(self, token: str) -> bool:
        return token in self.dropped or any(p.fullmatch(token) for p in self.dropped_patterns)

    def known(self, token: str) -> bool:
        return (token in self.synonyms or token in self.contrast_agent or token in self.post or token in self.pre
                or token in self.with_words or token in self.negation or self.is_dropped(token))  # fmt: skip


def load_lexicon(path: Path | str | None = None) -> Lexicon:
    """The packaged lexicon, or the file ``path`` (config ``match.sequence_lexicon``)."""
    from metsprep import data as package_data

    return _lexicon_from_text(package_data.read_text(package_data.SEQUENCE_LEXICON, path))


@lru_cache(maxsize=4)
def _lexicon_from_text(text: str) -> Lexicon:
    data: dict[str, Any] = yaml.safe_load(text)

    def words(key: str) -> frozenset[str]:
        values = data.get(key) or []
        not_text = [w for w in values if not isinstance(w, str)]
        if not_text:  # YAML reads an unquoted NO as False: the word would silently be lost
            raise ValueError(f"sequence lexicon {key}: {not_text} are not text; quote them")
        return frozenset(w.upper() for w in values)

    synonyms = {str(s).upper(): str(canonical).upper() for canonical, spellings in (data.get("synonyms") or {}).items()
                for s in spellings}  # fmt: skip
    return Lexicon(
        dropped=words("dropped"),
        dropped_patterns=tuple(re.compile(p) for p in data.get("dropped_patterns") or []),
        phrases=tuple(sorted(((tuple(str(p).upper().split()), str(canonical).upper())
                              for canonical, runs in (data.get("phrases") or {}).items() for p in runs),
                             key=lambda item: -len(item[0]))),
        synonyms=synonyms,
        synonyms_after=tuple((str(r["token"]).upper(), str(r["after"]).upper(), str(r["canonical"]).upper())
                             for r in data.get("synonyms_after") or []),
        contrast_agent=words("contrast_agent"),
        post=words("post"), post_alone=words("post_alone"),
        pre=words("pre"), pre_alone=words("pre_alone"),
        with_words=words("with"),
        negation=words("negation"), negation_alone=words("negation_alone"),
        compound_pieces=words("compound_pieces"), weighting_pieces=words("weighting_pieces"),
        negation_scope=int(data.get("negation_scope", 3)),
    )


@dataclass(frozen=True)
class DescriptionReading:
    """What a Series Description says, in canonical tokens."""

    tokens: tuple[str, ...]  # canonical tokens, dropped ones removed, contrast words replaced by a marker
    contrast: str  # pre | post | both | none
    contrast_words: tuple[str, ...]  # the phrases that decided `contrast`, e.g. ("ohne KM",) as normalised
    # a with/post word that scopes over nothing ("AX T1 SE W/"): the description was cut short
    dangling: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The tokens joined by single spaces and padded by one space (what rule patterns search)."""
        return f" {' '.join(self.tokens)} " if self.tokens else " "


def normalise(text: str | None) -> str:
    """Accents stripped, letters folded to ASCII, upper case, '+' a token, T2* -> T2STAR, W/O -> WO, C- kept."""
    if not text:
        return ""
    folded = unicodedata.normalize("NFKD", str(text).translate(_LETTER_FOLDS))
    upper = "".join(ch for ch in folded if not unicodedata.combining(ch)).upper()
    upper = re.sub(r"T2\s*\*", " T2STAR ", upper)  # T2*: susceptibility, not T2
    upper = re.sub(r"(?<![A-Z0-9])W\s*/\s*O(?![A-Z0-9])", " WO ", upper)
    upper = re.sub(r"(?<![A-Z0-9])W\s*/", " W ", upper)
    # "C-" (minus contrast, as on CT requests) is one token; every other '-' separates
    upper = re.sub(r"(?<![A-Z0-9])C\s*-(?![A-Z0-9])", " C_MINUS ", upper)
    upper = re.sub(r"[^A-Z0-9+_]+|_(?!MINUS)", " ", upper.replace("+", " + "))
    return " ".join(upper.split()).replace("C_MINUS", "C-")


def tokens_of(text: str | None, lexicon: Lexicon) -> list[tuple[str, bool]]:
    """(token, glued) pairs: synonyms applied, dropped tokens removed, compounds split.

    ``glued`` marks a piece split off a compound token (a "C" glued to "T1" is contrast).
    """
    out: list[tuple[str, bool]] = []
    for raw in _join_phrases(normalise(text).split(), lexicon):
        if lexicon.is_dropped(raw):
            continue
        if raw in lexicon.synonyms:
            out.append((lexicon.synonyms[raw], False))
            continue
        pieces = None if lexicon.known(raw) else _split_compound(raw, lexicon)
        if pieces is None:
            out.append((raw, False))
            continue
        out += [(lexicon.synonyms.get(p, p), True) for p in pieces if p not in ("W", "WI")]
    for spelling, before, canonical in lexicon.synonyms_after:
        out = [(canonical if t == spelling and k > 0 and out[k - 1][0] == before else t, glued)
               for k, (t, glued) in enumerate(out)]  # fmt: skip
    return out


def _join_phrases(tokens: list[str], lexicon: Lexicon) -> list[str]:
    """Runs of tokens listed under `phrases` replaced by their canonical token."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for run, canonical in lexicon.phrases:
            if tuple(tokens[i:i + len(run)]) == run:
                out.append(canonical)
                i += len(run)
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


def _split_compound(token: str, lexicon: Lexicon) -> list[str] | None:
    """``token`` as the fewest compound pieces that include a weighting, or None."""
    best: dict[int, list[str]] = {0: []}
    for end in range(1, len(token) + 1):
        for start in range(max(0, end - 9), end):
            piece = token[start:end]
            if start in best and piece in lexicon.compound_pieces:
                candidate = best[start] + [piece]
                if end not in best or len(candidate) < len(best[end]):
                    best[end] = candidate
    pieces = best.get(len(token))
    if not pieces or len(pieces) < 2 or not set(pieces) & lexicon.weighting_pieces:
        return None
    return pieces


def read_description(text: str | None, lexicon: Lexicon) -> DescriptionReading:
    """Canonical tokens and the contrast state of a Series Description."""
    tokens = tokens_of(text, lexicon)
    words = [t for t, _ in tokens]
    n = len(words)
    consumed = [False] * n
    # words that scope over a contrast word after them; a lone "C" after one is contrast
    scope_words = lexicon.negation | lexicon.pre | lexicon.post | lexicon.with_words

    def is_contrast_word(i: int) -> bool:
        word, glued = tokens[i]
        if word in lexicon.contrast_agent:
            return True
        if word != "C":
            return False
        before = words[i - 1] if i > 0 else ""
        after = words[i + 1] if i + 1 < n else ""
        return glued or "+" in (before, after) or before in scope_words or i == n - 1

    spans: dict[int, tuple[int, str]] = {}  # first token -> (last token, marker)
    dangling: list[str] = []

    def take(first: int, last: int, marker: str) -> None:
        for k in range(first, last + 1):
            consumed[k] = True
        spans[first] = (last, marker)

    def contrast_word_after(i: int) -> int | None:
        """The contrast word this negation/pre/post/with word scopes over: within
        `negation_scope` tokens, before the next such word ("POST OHNE KM" is two phrases)."""
        for j in range(i + 1, min(n, i + 1 + lexicon.negation_scope)):
            if is_contrast_word(j):
                return j
            if words[j] in scope_words:
                return None
        return None

    for i, word in enumerate(words):
        if consumed[i]:
            continue
        if word == "C-":
            take(i, i, PRE_MARKER)
        elif word in lexicon.negation or word in lexicon.pre:
            target = contrast_word_after(i)
            if target is not None:
                take(i, target, PRE_MARKER)
            elif word in lexicon.negation_alone or word in lexicon.pre_alone:
                take(i, i, PRE_MARKER)
        elif word in lexicon.post or word in lexicon.with_words:
            target = contrast_word_after(i)
            if target is not None:
                take(i, target, POST_MARKER)
            elif word in lexicon.post_alone:
                take(i, i, POST_MARKER)
            elif i == n - 1:
                dangling.append(word)
        elif word == "+":
            if i + 1 < n and is_contrast_word(i + 1):
                take(i, i + 1, POST_MARKER)
            elif i == n - 1 and i > 0:  # a trailing '+': "T1 SE+"
                take(i, i, POST_MARKER)
        elif is_contrast_word(i):
            take(i, i + 1 if i + 1 < n and words[i + 1] == "+" else i, POST_MARKER)

    kept: list[str] = []
    for i, word in enumerate(words):
        if i in spans:
            kept.append(spans[i][1])
        elif not consumed[i] and word != "+":
            kept.append(word)
    decided = tuple(" ".join(words[first:last + 1]) for first, (last, _) in sorted(spans.items()))
    markers = {marker for _, marker in spans.values()}
    contrast = ("both" if markers == {PRE_MARKER, POST_MARKER} else "pre" if PRE_MARKER in markers
                else "post" if POST_MARKER in markers else "none")  # fmt: skip
    return DescriptionReading(tuple(_dedupe_markers(kept)), contrast, decided, tuple(dangling))


def _dedupe_markers(tokens: list[str]) -> list[str]:
    out: list[str] = []
    for t in tokens:
        if t in (PRE_MARKER, POST_MARKER) and out and out[-1] == t:
            continue
        out.append(t)
    return out
