"""Rule-based gender rewriting: the word-pair lexicon and the rewrite of a text into a male, female or neutral
version. No LLM: :mod:`data_gen.fair` builds on it, and :class:`~data_gen.fake.FakeLLM` answers rewrite prompts with it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path


_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?\.?")

# Neutral replacements for every word of the gender list (ours; "" deletes an adjective use such as "male nurse").
_NEUTRAL = {
    "actor": "actor", "actress": "actor", "actors": "actors", "actresses": "actors",
    "airman": "aviator", "airwoman": "aviator", "airmen": "aviators", "airwomen": "aviators",
    "uncle": "relative", "aunt": "relative", "uncles": "relatives", "aunts": "relatives",
    "boy": "child", "girl": "child", "boys": "children", "girls": "children",
    "groom": "newlywed", "bride": "newlywed", "grooms": "newlyweds", "brides": "newlyweds",
    "brother": "sibling", "sister": "sibling", "brothers": "siblings", "sisters": "siblings",
    "businessman": "businessperson", "businesswoman": "businessperson",
    "businessmen": "businesspeople", "businesswomen": "businesspeople",
    "chairman": "chairperson", "chairwoman": "chairperson", "chairmen": "chairpersons", "chairwomen": "chairpersons",
    "dude": "person", "chick": "person", "dudes": "people", "chicks": "people",
    "dad": "parent", "mom": "parent", "dads": "parents", "moms": "parents",
    "daddy": "parent", "mommy": "parent", "daddies": "parents", "mommies": "parents",
    "son": "child", "daughter": "child", "sons": "children", "daughters": "children",
    "father": "parent", "mother": "parent", "fathers": "parents", "mothers": "parents",
    "male": "person", "female": "person", "males": "people", "females": "people",
    "guy": "person", "gal": "person", "guys": "people", "gals": "people",
    "gentleman": "person", "lady": "person", "gentlemen": "people", "ladies": "people",
    "grandson": "grandchild", "granddaughter": "grandchild", "grandsons": "grandchildren",
    "granddaughters": "grandchildren",
    "he": "they", "she": "they", "himself": "themselves", "herself": "themselves", "him": "them", "his": "their",
    "her": "their",  # or "them": decided by the next word in rewrite_rules
    "husband": "spouse", "wife": "spouse", "husbands": "spouses", "wives": "spouses",
    "king": "monarch", "queen": "monarch", "kings": "monarchs", "queens": "monarchs",
    "lord": "noble", "lords": "nobles", "sir": "", "ma'am": "", "miss": "", "mr.": "Mx.", "mrs.": "Mx.", "ms.": "Mx.",
    "man": "person", "woman": "person", "men": "people", "women": "people",
    "policeman": "police officer", "policewoman": "police officer",
    "policemen": "police officers", "policewomen": "police officers",
    "prince": "royal", "princess": "royal", "princes": "royals", "princesses": "royals",
    "spokesman": "spokesperson", "spokeswoman": "spokesperson", "spokesmen": "spokespeople",
    "spokeswomen": "spokespeople",
}
_THEY_VERBS = {"is": "are", "was": "were", "has": "have", "does": "do", "isn't": "aren't", "wasn't": "weren't",
               "doesn't": "don't", "hasn't": "haven't"}
# Words after which "her" is an object pronoun (him/them) rather than a determiner (his/their).
_NOT_NOUN_AFTER_HER = {"and", "or", "but", "to", "in", "on", "at", "with", "for", "from", "by", "of", "as", "that",
                       "the", "a", "an", "up", "down", "out", "off", "over", "back", "away", "again", "is", "was",
                       "when", "while", "if", "so", "because", "then", "too", "very", "about", "into", "onto"}


@dataclass(frozen=True)
class GenderLexicon:
    male_to_female: dict
    female_to_male: dict
    male: frozenset
    female: frozenset

    @property
    def all(self) -> frozenset:
        return self.male | self.female


@lru_cache(maxsize=4)
def load_gender_lexicon(path: str | None = None) -> GenderLexicon:
    """Gender word pairs ``[[male, female], ...]`` from the bundled list (or a file of the same format)."""
    if path is None:
        raw = resources.files("data_gen").joinpath("assets/gender_words.json").read_text(encoding="utf-8")
    else:
        raw = Path(path).read_text(encoding="utf-8")
    pairs = json.loads(raw)["gender"]
    m2f, f2m = {}, {}
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(w, str) for w in pair)):
            raise ValueError(f"gender word list: entry {i}: expected [male, female], got {pair!r}")
        m, f = pair[0].lower(), pair[1].lower()
        m2f.setdefault(m, f)  # first pair wins: "guy" -> "gal" before "guy" -> "girl"
        f2m.setdefault(f, m)
    missing = sorted(w for w in list(m2f) + list(f2m) if w not in _NEUTRAL)
    if missing:
        raise ValueError(f"gender word list: no neutral form for {missing[:5]} (extend data_gen.gender_rules._NEUTRAL)")
    # "her" is both the object pronoun and the determiner; his/him map to it, it maps back by context.
    return GenderLexicon(m2f, f2m, frozenset(m2f) - frozenset(f2m), frozenset(f2m) - frozenset(m2f))


def _case_like(src: str, repl: str) -> str:
    if not repl:
        return repl
    if src.isupper() and len(src) > 1:
        return repl.upper()
    if src[0].isupper():
        return repl[0].upper() + repl[1:]
    return repl


def _next_word(text: str, end: int) -> str:
    m = _WORD.search(text, end)
    if m is None or text[end:m.start()].strip():  # punctuation in between: no following word in this clause
        return ""
    return m.group(0).lower()


def rewrite_rules(text: str, group: str, lexicon: GenderLexicon | None = None) -> str:
    """Rule-based rewrite of ``text`` into ``group`` (``male``, ``female`` or ``neutral``)."""
    lex = lexicon or load_gender_lexicon()
    out, last = [], 0
    prev_they = False
    for m in _WORD.finditer(text):
        w = m.group(0)
        lw = w.lower()
        key = lw if lw in lex.all or lw in _NEUTRAL else lw.rstrip(".")
        repl = None
        if group == "male" and key in lex.female_to_male:
            repl = lex.female_to_male[key]
            if key == "her":
                nxt = _next_word(text, m.end())
                repl = "his" if nxt and nxt not in _NOT_NOUN_AFTER_HER else "him"
        elif group == "female" and key in lex.male_to_female:
            repl = lex.male_to_female[key]
        elif group == "neutral":
            if key in ("her",):
                nxt = _next_word(text, m.end())
                repl = "their" if nxt and nxt not in _NOT_NOUN_AFTER_HER else "them"
            elif key in _NEUTRAL and key in lex.all:
                repl = _NEUTRAL[key]
            elif prev_they and lw in _THEY_VERBS:
                repl = _THEY_VERBS[lw]
        elif group not in ("male", "female", "neutral"):
            raise ValueError(f"group: expected male, female or neutral, got {group!r}")
        if key != lw and repl is not None and w.endswith(".") and not repl.endswith("."):
            repl += "."  # keep a sentence-final full stop that the word pattern swallowed
        prev_they = group == "neutral" and key in ("he", "she")
        if repl is None:
            continue
        out.append(text[last:m.start()])
        out.append(_case_like(w, repl))
        last = m.end()
    out.append(text[last:])
    return re.sub(r"  +", " ", "".join(out)).strip()


def gender_words_in(text: str, lexicon: GenderLexicon | None = None) -> tuple[set, set]:
    """(male words, female words) present in ``text``, lower-cased."""
    lex = lexicon or load_gender_lexicon()
    words = {w.lower() for w in _WORD.findall(text)} | {w.lower().rstrip(".") for w in _WORD.findall(text)}
    return words & lex.male, words & lex.female
