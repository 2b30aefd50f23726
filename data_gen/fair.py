"""Fairness augmentation (Deng et al. 2024, "(LLM-Assisted) Content Conditional Debiasing for Fair Text Embedding").

Each source text is rewritten into every sensitive group (gender: male, female) and a neutral version, giving
content-matched tuples ``{id, neutral, groups: {male, female}, source}`` for the CCD loss. Two producers:

* :func:`rule_based_tuple`: a word-list swapper (no LLM), the baseline; its known limits: names are not swapped,
  "her" -> his/him and the neutral "they" verb agreement use simple heuristics.
* :class:`FairAugmenter`: few-shot LLM rewrites, validated by :func:`validate_rewrite`; failures are kept (in a
  ``.failures.jsonl`` next to the output) and never cached.

Gender words come from the gender pairs of ``bias_attribute_words.json`` (SEAT / bias-bench lists, CC BY-NC 4.0),
copied to ``data_gen/assets/gender_words.json``.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import InputError
from .files import check_outputs
from .gender_rules import _NEUTRAL, _WORD, GenderLexicon, gender_words_in, load_gender_lexicon, rewrite_rules  # noqa: F401
from .jsonl import (JsonlAppender, JsonlError, decode_line, iter_jsonl, load_by_id, record_id, record_text,
                    write_jsonl_atomic)
from .llm import GREEDY, CachedLLM, FatalLLMError, LLMError
from .prompts import (FAIR_REWRITE, FAIR_V3_VERSION, PROMPT_VERSION, ParseError, fair_rewrite_prompt_v3,
                      parse_rewrite)
from .runner import parallel_map

log = logging.getLogger(__name__)


def _latin_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(c.isascii() for c in letters) / len(letters) if letters else 0.0


def validate_rewrite(source: str, rewrite: str, group: str, *, min_ratio: float = 0.5, max_ratio: float = 2.0,
                     lexicon: GenderLexicon | None = None) -> list[str]:
    """Problems with a rewrite (empty list = valid).

    Checks: non-empty; length ratio ``len(rewrite) / len(source)`` in ``[min_ratio, max_ratio]``; same script (share
    of ASCII letters within 0.2, a cheap same-language check); group words: a male version has male words and no
    female-only words, a female version the reverse, a neutral version none at all.
    """
    lex = lexicon or load_gender_lexicon()
    errs = []
    if not rewrite.strip():
        return ["empty"]
    ratio = len(rewrite) / max(1, len(source))
    if not min_ratio <= ratio <= max_ratio:
        errs.append(f"length ratio {ratio:.2f} outside [{min_ratio}, {max_ratio}]")
    if abs(_latin_share(rewrite) - _latin_share(source)) > 0.2:
        errs.append("different script/language from the source")
    male, female = gender_words_in(rewrite, lex)
    if group == "male":
        if female:
            errs.append(f"female words in the male version: {sorted(female)}")
        if not male:
            errs.append("no male words in the male version")
    elif group == "female":
        if male:
            errs.append(f"male words in the female version: {sorted(male)}")
        if not female:
            errs.append("no female words in the female version")
    elif group == "neutral":
        if male or female:
            errs.append(f"gendered words in the neutral version: {sorted(male | female)}")
    else:
        raise ValueError(f"group: expected male, female or neutral, got {group!r}")
    return errs


# Words a rewrite may add, drop or change without changing the content: the gender list, its neutral forms,
# pronouns and the verbs whose agreement follows "they", articles.
_FREE_WORDS = frozenset({"they", "them", "their", "theirs", "themselves", "someone", "somebody", "individual",
                         "individuals", "person", "people", "adult", "adults", "performer", "performers", "parent",
                         "parents", "are", "is", "were", "was", "have", "has", "do", "does", "a", "an", "the"}
                        | {w.rstrip(".") for v in _NEUTRAL.values() for w in v.lower().split()})


def content_words(text: str, lexicon: GenderLexicon | None = None) -> list[str]:
    """Lower-cased words of ``text`` other than gender words and :data:`_FREE_WORDS` (the content to keep)."""
    lex = lexicon or load_gender_lexicon()
    out = []
    for w in re.findall(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?", text.lower()):
        if w in lex.all or w + "." in lex.all or w in _FREE_WORDS:
            continue
        out.append(w)
    return out


def content_diff(source: str, rewrite: str, lexicon: GenderLexicon | None = None) -> tuple[list, list]:
    """(content words of the source missing from the rewrite, content words the rewrite adds); multisets."""
    from collections import Counter

    a, b = Counter(content_words(source, lexicon)), Counter(content_words(rewrite, lexicon))
    return sorted((a - b).elements()), sorted((b - a).elements())


def check_rewrite(source: str, rewrite: str, group: str, *, max_changed: int = 1,
                  lexicon: GenderLexicon | None = None) -> list[str]:
    """:func:`validate_rewrite` plus the checks for LLM rewrites: not a copy of the source, and the content kept.

    Content: at most ``max_changed`` content words (:func:`content_words`: not gender words, pronouns, neutral
    nouns, articles or be/have/do forms) of the source may be missing from the rewrite, and at most ``max_changed``
    added (catches truncation, run-on continuation, paraphrase).
    """
    errs = validate_rewrite(source, rewrite, group, lexicon=lexicon)
    if errs == ["empty"]:
        return errs
    if " ".join(rewrite.split()).lower() == " ".join(source.split()).lower():
        errs.insert(0, "copy of the source")
    missing, added = content_diff(source, rewrite, lexicon)
    if len(missing) > max_changed or len(added) > max_changed:
        errs.append(f"content changed: missing {missing[:6]}, added {added[:6]} (more than {max_changed})")
    return errs


def pair_keys(word: str, lexicon: GenderLexicon | None = None) -> set:
    """The male form(s) of a gender word (``her`` -> ``{his, him}``), the word itself if male, else empty."""
    lex = lexicon or load_gender_lexicon()
    w = word.lower()
    if w == "her":
        return {"his", "him"}
    if w in lex.male_to_female:
        return {w}
    if w in lex.female_to_male:
        return {lex.female_to_male[w]}
    return set()


def gender_prefix(text: str, lexicon: GenderLexicon | None = None) -> str:
    """The words of ``text`` (whitespace-normalised) before its first gender word, without trailing space."""
    lex = lexicon or load_gender_lexicon()
    text = " ".join(text.split())
    for m in _WORD.finditer(text):
        lw = m.group(0).lower()
        if lw in lex.all or lw.rstrip(".") in lex.all:
            return text[:m.start()].rstrip()
    return ""


def llama_cpp_ban_fn(llm):
    """``fn(words) -> token ids`` for :class:`~data_gen.llm.LlamaCppLLM` (or a CachedLLM around one): the ids of
    every single-token spelling of each word (lower, Capitalised, UPPER; with and without a leading space)."""
    inner = getattr(llm, "inner", llm)
    tok = inner._llm.tokenize  # llama_cpp.Llama; LlamaCppLLM has no public tokenizer hook

    def fn(words):
        out = set()
        for w in words:
            w = w.rstrip(".")
            for v in {w, w.capitalize(), w.upper()}:
                for pre in ("", " "):
                    t = tok((pre + v).encode("utf-8"), add_bos=False, special=False)
                    if len(t) == 1:
                        out.add(t[0])
        return out
    return fn


def source_group(text: str, lexicon: GenderLexicon | None = None) -> str | None:
    """``male``, ``female``, ``mixed`` (both kinds of gender words) or None (no gender words)."""
    m, f = gender_words_in(text, lexicon)
    return "mixed" if m and f else "male" if m else "female" if f else None


def rule_based_tuple(rec_id: str, text: str, lexicon: GenderLexicon | None = None) -> dict[str, Any]:
    """The no-LLM baseline tuple, validated like LLM rewrites (``ok`` False with ``errors`` when it fails)."""
    lex = lexicon or load_gender_lexicon()
    out = {g: rewrite_rules(text, g, lex) for g in ("male", "female", "neutral")}
    return _finish(rec_id, text, out, method="rules", model=None, lexicon=lex)


def _finish(rec_id, text, out: dict, *, method: str, model: str | None, lexicon, errors=None,
            prompt_version: str | None = None, check=None) -> dict[str, Any]:
    errors = dict(errors or {})
    plain = lambda src, rw, g: validate_rewrite(src, rw, g, lexicon=lexicon)  # noqa: E731
    check = check or plain
    male, female = gender_words_in(text, lexicon)
    if not (male or female):
        errors["source"] = ["no gendered words in the source (nothing to augment)"]
    for g in ("male", "female", "neutral"):
        if g in out and g not in errors:
            # the source kept as its own group's version (v3) is not a "copy" failure
            e = (plain if out[g] == text and g == source_group(text, lexicon) else check)(text, out[g], g)
            if e:
                errors[g] = e
    rec = {"id": rec_id, "source": text, "neutral": out.get("neutral"),
           "groups": {"male": out.get("male"), "female": out.get("female")},
           "method": method, "model": model,
           "prompt_version": (prompt_version or PROMPT_VERSION) if method == "llm" else None,
           "ok": not errors}
    if errors:
        rec["errors"] = errors
    return rec


def load_texts(path: str | os.PathLike, *, text_field: str = "text", id_field: str = "id") -> list[tuple[str, str]]:
    """``(id, text)`` pairs from JSONL (``id``/``_id`` and ``text`` fields by default) or a plain .txt (one per line),
    UTF-8. Errors name ``file:line`` and the field (:class:`~data_gen.jsonl.JsonlError`, an ``InputError``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input: file not found: {path}")
    out, seen = [], set()
    if path.suffix == ".txt":
        try:
            data = path.read_bytes()
        except OSError as e:
            raise JsonlError(f"{path}: cannot read ({e.strerror or e})") from None
        for i, raw in enumerate(data.split(b"\n"), 1):
            line = decode_line(raw, path, i).strip()
            if line:
                out.append((f"line{i}", line))
        return out
    for lineno, rec in iter_jsonl(path, tolerate_torn_tail=False):
        where = f"{path}:{lineno}"
        rid = record_id(rec, where, id_field, "_id")
        text = record_text(rec, f"{where} (id {rid})", text_field)
        if rid in seen:
            raise JsonlError(f"{where}: duplicate id {rid!r}")
        seen.add(rid)
        out.append((rid, text))
    return out


def augmentation_stats(tuples: list[dict], sources: dict | None = None) -> dict:
    """Quality of male/female/neutral rewrites: failure rate, length ratios, gender words left over.

    Args:
      tuples: augmenter records ``{id, source, neutral, groups, ok, errors?}`` (valid and failed).

    Returns:
      ``{n, ok, failure_rate, failure_reasons, length_ratio: {group: mean}, leftover: {group: share}}``; a
      leftover is a neutral version with any gender word, or a male (female) version with a female (male) word.
    """
    n = len(tuples)
    ok = sum(bool(t.get("ok")) for t in tuples)
    reasons = {}
    for t in tuples:
        for g, errs in (t.get("errors") or {}).items():
            for e in errs:
                k = f"{g}: {e.split(':')[0][:48]}"
                reasons[k] = reasons.get(k, 0) + 1
    ratios = {g: [] for g in ("male", "female", "neutral")}
    left = {g: 0 for g in ratios}
    counted = {g: 0 for g in ratios}
    for t in tuples:
        src = t.get("source") or ""
        for g in ratios:
            text = t.get("neutral") if g == "neutral" else (t.get("groups") or {}).get(g)
            if not text or not src:
                continue
            counted[g] += 1
            ratios[g].append(len(text) / max(1, len(src)))
            m, f = gender_words_in(text)
            left[g] += bool(m or f) if g == "neutral" else bool(f if g == "male" else m)
    return {"n": n, "ok": ok, "failure_rate": (n - ok) / n if n else float("nan"),
            "failure_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
            "length_ratio": {g: float(np.mean(v)) if v else float("nan") for g, v in ratios.items()},
            "leftover": {g: left[g] / counted[g] if counted[g] else float("nan") for g in left}}


def fair_side_files(out_path: str | os.PathLike) -> tuple[Path, Path]:
    """``(<out>.log.jsonl, <out>.failures.jsonl)``: every attempt by id (the resume log), and the failed ids."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".log.jsonl"), out_path.with_name(out_path.name + ".failures.jsonl")


@dataclass
class FairSummary:
    inputs: int = 0
    ok: int = 0
    failed: int = 0
    failure_reasons: dict = field(default_factory=dict)
    usage: dict = field(default_factory=dict)
    seconds: float = 0.0


class FairAugmenter:
    """LLM rewrites into male / female / neutral versions, validated, resumable by id.

    Args:
      llm: a backend (normally a :class:`~data_gen.llm.CachedLLM`); ``None`` uses the rule-based swapper only.
      concurrency: LLM calls in flight.
      max_tokens: generation budget per rewrite.
      retry_failed: on a re-run, also redo ids whose tuple failed validation.
      prompt: ``"v2"`` (fixed 3-shot prompt, one generation per group, :func:`validate_rewrite`) or ``"v3"``
        ("LLM proposes, validator checks", for small base models): the source is kept as its own gender's version
        (a one-gender source needs 2 generations, not 3); demonstrations retrieved by shared gender words
        (:func:`~data_gen.prompts.fair_rewrite_prompt_v3`); one output line, at most ``len(text) // 2 + 16``
        tokens; each output checked by :func:`check_rewrite` (also rejects copies and changed content: more
        than ``max_changed`` content words missing or added); up to ``attempts`` greedy generations per group,
        each with other demonstrations.
      demos: demonstrations per v3 prompt.
      ban_tokens: v3 only: ``fn(words) -> token ids`` (e.g. :func:`llama_cpp_ban_fn`); the tokens of the gender
        words the target must not contain get logit bias -100 (a negative lexical constraint: the model cannot copy
        "woman" into the male version, so it writes what the demonstrations suggest instead).
      prefix_from: v3 only: from this attempt on (0-based), the words before the first gender word are given
        (:func:`gender_prefix`), and the model writes the rest; None: never.
    """

    def __init__(self, llm=None, *, concurrency: int = 1, max_tokens: int = 96, retry_failed: bool = False,
                 progress: bool = True, lexicon: GenderLexicon | None = None, prompt: str = "v2",
                 attempts: int = 1, demos: int = 4, max_changed: int = 1, ban_tokens=None,
                 prefix_from: int | None = None):
        if prompt not in ("v2", "v3"):
            raise ValueError(f"prompt: expected 'v2' or 'v3', got {prompt!r}")
        if attempts < 1:
            raise ValueError(f"attempts: expected >= 1, got {attempts}")
        self.prompt = prompt
        self.attempts = attempts
        self.demos = demos
        self.max_changed = max_changed
        self.ban_tokens = ban_tokens
        self.prefix_from = prefix_from
        self._banned: dict = {}
        self.llm = llm if (llm is None or isinstance(llm, CachedLLM)) else CachedLLM(llm, None)
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.retry_failed = retry_failed
        self.progress = progress
        self.lexicon = lexicon or load_gender_lexicon()

    def _one(self, item: tuple[str, str]) -> dict:
        rid, text = item
        if self.llm is None:
            return rule_based_tuple(rid, text, self.lexicon)
        if self.prompt == "v3":
            return self._one_v3(rid, text)
        out, errors = {}, {}
        row = {"text": text}
        for g in ("male", "female", "neutral"):
            task = FAIR_REWRITE[g]

            def ok(raw, g=g, task=task):
                try:
                    return not validate_rewrite(text, task.parse_output(raw, row)[g], g, lexicon=self.lexicon)
                except ParseError:
                    return False
            try:
                raw = self.llm.generate(task.format_input(row), max_tokens=self.max_tokens, stop=["\n\n"],
                                        **GREEDY, accept=ok)
                out[g] = task.parse_output(raw, row)[g]
            except ParseError as e:
                errors[g] = [f"parse: {e}"]
            except FatalLLMError:  # the server refuses every call: stop the run
                raise
            except LLMError as e:
                errors[g] = [f"llm: {e}"]
        rec = _finish(rid, text, out, method="llm", model=self.llm.model, lexicon=self.lexicon, errors=errors)
        if any(e and e[0].startswith("llm:") for e in errors.values()):
            rec["error_kind"] = "llm"
        return rec

    def _check(self, src: str, rewrite: str, g: str) -> list[str]:
        return check_rewrite(src, rewrite, g, max_changed=self.max_changed, lexicon=self.lexicon)

    def _one_v3(self, rid: str, text: str) -> dict:
        sg = source_group(text, self.lexicon)
        if sg is None:  # nothing to rewrite: recorded as a source failure, no LLM call
            return _finish(rid, text, {}, method="llm", model=self.llm.model, lexicon=self.lexicon,
                           prompt_version=FAIR_V3_VERSION, check=self._check)
        out, errors, tries = {}, {}, {}
        if sg in ("male", "female"):
            out[sg] = text
        budget = min(self.max_tokens, len(text) // 2 + 16)
        for g in ("male", "female", "neutral"):
            if g in out:
                continue
            for attempt in range(self.attempts):
                tries[g] = attempt + 1
                prefix = gender_prefix(text, self.lexicon) \
                    if self.prefix_from is not None and attempt >= self.prefix_from else ""
                prompt = fair_rewrite_prompt_v3(text, sg, g, k=self.demos, variant=attempt,
                                                pair_key=lambda w: pair_keys(w, self.lexicon), prefix=prefix)
                params = {"max_tokens": budget, "stop": ["\n"], **GREEDY}
                if self.ban_tokens is not None:
                    banned = self.lexicon.all if g == "neutral" else \
                        (self.lexicon.female if g == "male" else self.lexicon.male)
                    if g not in self._banned:
                        self._banned[g] = {int(t): -100.0 for t in sorted(self.ban_tokens(sorted(banned)))}
                    params["logit_bias"] = self._banned[g]

                def ok(raw, g=g, prefix=prefix):
                    try:
                        return not self._check(text, parse_rewrite(prefix + raw), g)
                    except ParseError:
                        return False
                try:
                    raw = self.llm.generate(prompt, **params, accept=ok)
                    out[g] = parse_rewrite(prefix + raw)
                    errs = self._check(text, out[g], g)
                except ParseError as e:
                    errs = [f"parse: {e}"]
                except FatalLLMError:  # the server refuses every call: stop the run
                    raise
                except LLMError as e:
                    errs = [f"llm: {e}"]
                    errors[g] = errs
                    break
                if not errs:
                    errors.pop(g, None)
                    break
                errors[g] = errs
        rec = _finish(rid, text, out, method="llm", model=self.llm.model, lexicon=self.lexicon, errors=errors,
                      prompt_version=FAIR_V3_VERSION, check=self._check)
        rec["attempts"] = tries
        if any(e and e[0].startswith("llm:") for e in errors.values()):
            rec["error_kind"] = "llm"
        return rec

    def run(self, items: Sequence[tuple[str, str]], out_path: str | os.PathLike) -> FairSummary:
        """Augment ``items`` (``(id, text)``), appending to ``<out>.log.jsonl`` and rewriting ``out`` (valid tuples)
        and ``<out>.failures.jsonl`` atomically at the end."""
        t0 = time.perf_counter()
        out_path = Path(out_path)
        log_path, fail_path = fair_side_files(out_path)
        check_outputs([("out", out_path), ("failures", fail_path), ("log", log_path)])  # before any LLM call
        done = load_by_id(log_path)

        def needs(rec):
            if rec is None:
                return True
            if rec.get("ok"):
                return False
            return self.retry_failed or rec.get("error_kind") == "llm"
        todo = [it for it in items if needs(done.get(it[0]))]
        with JsonlAppender(log_path) as w:
            parallel_map(self._one, todo, concurrency=self.concurrency, on_result=lambda _it, rec: w.append(rec),
                         desc="augment-fair", progress=self.progress)
        done = load_by_id(log_path)
        good, bad, reasons = [], [], {}
        for rid, _ in items:
            rec = done[rid]
            (good if rec["ok"] else bad).append(rec)
            for g, errs in rec.get("errors", {}).items():
                for e in errs:
                    k = f"{g}: {e.split(':')[0] if e.startswith(('llm', 'parse')) else e.split(' in ')[0][:40]}"
                    reasons[k] = reasons.get(k, 0) + 1
        write_jsonl_atomic(out_path, [{k: r[k] for k in ("id", "neutral", "groups", "source", "method", "model",
                                                         "prompt_version")} for r in good])
        write_jsonl_atomic(fail_path, bad)
        usage = self.llm.usage.as_dict() if self.llm is not None else {}
        return FairSummary(inputs=len(items), ok=len(good), failed=len(bad), failure_reasons=reasons, usage=usage,
                           seconds=time.perf_counter() - t0)
