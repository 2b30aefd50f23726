"""Fixed few-shot prompts (completion style, for base models) and their strict parsers.

Every prompt is a pure function of its inputs and ``PROMPT_VERSION`` is bumped whenever any text here changes, so
the version recorded in the output (and the prompt text in each cache key) identifies exactly what was asked. The
demonstration passages are written for this file (no benchmark text), and cover diverse tasks as FRet prescribes
(Gecko, Lee et al. 2024, Sec. 3.1: question answering, fact checking, search result, sentence similarity, ...).
The exact prompts of the paper are not published; these are ours.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

PROMPT_VERSION = "fret-v1.2/fair-v2"

TASK_PREFIX = "Given a query, find a passage that"

_QG_DEMOS = [
    ("The Great Barrier Reef, off the coast of Queensland, is the largest coral reef system on Earth. It stretches "
     "for over 2,300 kilometres and can be seen from space.",
     "has the answer to the query.", "how long is the great barrier reef"),
    ("Regular aerobic exercise lowers resting blood pressure by a few millimetres of mercury in adults with "
     "hypertension, according to a meta-analysis of randomised trials.",
     "allows you to check whether the query is true or not.", "Exercise has no effect on blood pressure."),
    ("Sourdough bread is leavened by a culture of wild yeast and lactic acid bacteria. The bacteria give the bread "
     "its sour taste and help it keep longer.",
     "might show up as a search result.", "sourdough starter bacteria"),
    ("The committee postponed the vote on the new budget until next month because several members were absent.",
     "is semantically similar to the query.", "The budget vote was delayed since some committee members were away."),
    ("Lithium-ion batteries lose capacity faster when stored fully charged at high temperature; storing them at "
     "about half charge in a cool place slows the ageing.",
     "gives advice that answers the query.", "best way to store a laptop battery for months"),
    ("In 1928 Alexander Fleming noticed that a mould contaminating his bacterial cultures killed the bacteria around "
     "it; the substance it produced was later named penicillin.",
     "describes the discovery the query asks about.", "who discovered penicillin and how"),
]


def truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters at a word boundary (prompts must fit the context)."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    sp = cut.rfind(" ")
    return cut[: sp if sp > max_chars // 2 else max_chars]


def passage_text(title: str | None, text: str, max_chars: int) -> str:
    body = f"{title.strip()}. {text}" if title and title.strip() else text
    return truncate(body, max_chars)


def query_generation_prompt(passage: str) -> str:
    """FRet step 1 prompt: one fixed instruction + diverse few-shot demos, ending inside the task sentence.

    The prompt ends with ``"Task: Given a query, find a passage that"`` so the model only writes the task-specific
    remainder, one line, then ``Query: ...``; generation stops at a blank line.
    """
    lines = ["Each passage below is followed by a retrieval task and a query for that task. The task says what the "
             "query is looking for; the query is what a user would type, and the passage is a good result for it.", ""]
    for p, task, q in _QG_DEMOS:
        lines += [f"Passage: {p}", f"Task: {TASK_PREFIX} {task}", f"Query: {q}", ""]
    lines += [f"Passage: {passage}", f"Task: {TASK_PREFIX}"]
    return "\n".join(lines)


class ParseError(ValueError):
    """LLM output that does not have the expected shape; recorded as a failure, never cached."""


_CHAT_TASK_START = re.compile(r"\A\s*(Task:\s*)?" + re.escape(TASK_PREFIX) + r"(?=\s)")
_QG_RE = re.compile(r"\A[ \t]*(?P<task>[^\n]+?)[ \t]*\n[ \t]*Query:[ \t]*(?P<query>[^\n]+?)[ \t]*\n?[ \t]*\Z")


@dataclass(frozen=True)
class TaskQuery:
    task: str
    query: str


def parse_task_query(text: str, *, chat: bool = False) -> TaskQuery:
    """Parse ``" <rest of task>\\nQuery: <query>"`` strictly: exactly these two non-empty lines.

    ``chat``: the answer of a chat model, which may restate the task's start (``"Task: Given a query, find a
    passage that ..."``); that prefix is removed first. Nothing else is relaxed.

    Raises:
      ParseError: naming what was wrong and quoting the start of the text.
    """
    if chat:
        text = _CHAT_TASK_START.sub("", text, count=1)
    m = _QG_RE.match(text)
    if not m:
        raise ParseError(f"expected '<task rest>\\nQuery: <query>' (two lines), got {text[:160]!r}")
    rest, query = m.group("task").strip(), m.group("query").strip()
    if len(rest) < 3 or rest.startswith(("Query:", "Passage:", "Task:")):
        raise ParseError(f"task description is empty or malformed: {rest[:120]!r}")
    if len(query) < 3:
        raise ParseError(f"query is too short: {query!r}")
    if len(rest) > 300 or len(query) > 400:
        raise ParseError(f"task ({len(rest)} chars) or query ({len(query)} chars) too long")
    if query.casefold() in _DEMO_QUERIES:
        raise ParseError(f"the query copies a demonstration: {query!r}")
    return TaskQuery(task=f"{TASK_PREFIX} {rest}", query=query)


_DEMO_QUERIES = {q.casefold() for _, _, q in _QG_DEMOS}

_QL_DEMOS = [(p, q) for p, _, q in _QG_DEMOS[:1] + _QG_DEMOS[4:5]]

_RC_DEMOS = [
    (_QG_DEMOS[0][2], _QG_DEMOS[0][0], "Yes"),
    (_QG_DEMOS[2][2], _QG_DEMOS[3][0], "No"),
    (_QG_DEMOS[5][2], _QG_DEMOS[5][0], "Yes"),
    (_QG_DEMOS[4][2], _QG_DEMOS[1][0], "No"),
]


def query_likelihood_prompt(passage: str) -> tuple[str, str]:
    """FRet step 2 query likelihood: returns ``(prompt, continuation_prefix)``; score ``prompt`` with ``" " + query``.

    QL(q, p) = log P(q | P_QL, p): relevant (passage, query) demos then the candidate passage (Sachan et al. 2022
    with few-shot demos as in PaRaDe, Drozdov et al. 2023).
    """
    lines = ["Each passage is followed by a search query that it answers well.", ""]
    for p, q in _QL_DEMOS:
        lines += [f"Passage: {p}", f"Query: {q}", ""]
    lines += [f"Passage: {passage}", "Query:"]
    return "\n".join(lines), " "


def relevance_prompt(query: str, passage: str) -> tuple[str, str]:
    """FRet step 2 relevance classification: returns ``(prompt, label)``; RC(q, p) = log P(" Yes" | prompt).

    Binary Yes/No labels (Zhuang et al. 2023 also use graded labels; which label the Gecko paper scores is not
    published). The query comes before the passage so all candidates of one query share the prompt prefix.
    """
    lines = ["Decide whether the passage is relevant to the search query. Answer Yes or No.", ""]
    for q, p, a in _RC_DEMOS:
        lines += [f"Query: {q}", f"Passage: {p}", f"Relevant: {a}", ""]
    lines += [f"Query: {query}", f"Passage: {passage}", "Relevant:"]
    return "\n".join(lines), " Yes"


RC_GRADED_VERSION = "rc-graded-v1"
RC_GRADED_LABELS = ("0", "1", "2", "3")

_RC_GRADED_DEMOS = [
    (_QG_DEMOS[0][2], _QG_DEMOS[0][0], "3"),
    (_QG_DEMOS[2][2], _QG_DEMOS[3][0], "0"),
    ("battery life of electric cars", _QG_DEMOS[4][0], "1"),
    ("antibiotics discovered in the twentieth century", _QG_DEMOS[5][0], "2"),
]


def relevance_prompt_graded(query: str, passage: str) -> tuple[str, tuple[str, ...]]:
    """FRet step 2 relevance classification with graded labels: returns ``(prompt, labels)``.

    Zhuang et al. 2023 ("Beyond Yes and No: Improving Zero-Shot LLM Rankers via Scoring Fine-Grained Relevance
    Labels") rank by the expected relevance over the label distribution,

    .. math:: RC(q, p) = \\sum_{k=0}^{3} k \\, \\frac{e^{\\ell_k}}{\\sum_j e^{\\ell_j}},
       \\quad \\ell_k = \\log P(\\text{" k"} \\mid \\text{prompt}),

    which separates candidates a binary Yes/No flattens. Labels are scored with a leading space (completion
    style); a chat answer lists them without it. Few-shot demos show each label once; ours, like all prompts here.
    """
    lines = ["Judge how relevant the passage is to the search query, on a scale from 0 to 3: 3 = perfectly relevant "
             "(the passage is about the query and answers it), 2 = highly relevant (it answers the query in part), "
             "1 = somewhat relevant (same topic, but it does not answer the query), 0 = not relevant.", ""]
    for q, p, a in _RC_GRADED_DEMOS:
        lines += [f"Query: {q}", f"Passage: {p}", f"Relevance: {a}", ""]
    lines += [f"Query: {query}", f"Passage: {passage}", "Relevance:"]
    return "\n".join(lines), tuple(" " + label for label in RC_GRADED_LABELS)


# ---- fairness augmentation -------------------------------------------------------------------------------------

FAIR_GROUPS = ("male", "female", "neutral")

# (male, female, neutral) versions of the same content. Each prompt shows sources of the *other* gender, so that
# copying the input is never what the demonstrations do.
_FAIR_DEMOS = [
    ("The nurse said he would call his wife after the shift.",
     "The nurse said she would call her husband after the shift.",
     "The nurse said they would call their spouse after the shift."),
    ("My brother and his son fixed the old bike in the garage.",
     "My sister and her daughter fixed the old bike in the garage.",
     "My sibling and their child fixed the old bike in the garage."),
    ("A man in a red coat is walking his dog in the park.",
     "A woman in a red coat is walking her dog in the park.",
     "A person in a red coat is walking their dog in the park."),
]

_FAIR_INSTRUCTION = {
    "male": "Rewrite each sentence so that every person in it is male. Change only the words that mark gender "
            "(pronouns, nouns like woman/man, mother/father); keep everything else the same.",
    "female": "Rewrite each sentence so that every person in it is female. Change only the words that mark gender "
              "(pronouns, nouns like woman/man, mother/father); keep everything else the same.",
    "neutral": "Rewrite each sentence in gender-neutral language: use they/them/their and neutral nouns (person, "
               "parent, sibling, child, spouse). Keep everything else the same.",
}


def fair_rewrite_prompt(text: str, group: str) -> str:
    """Few-shot completion prompt asking for ``text`` rewritten into ``group`` (male, female or neutral)."""
    if group not in FAIR_GROUPS:
        raise ValueError(f"group: expected one of {FAIR_GROUPS}, got {group!r}")
    label = group.capitalize()
    lines = [_FAIR_INSTRUCTION[group], ""]
    for i, (male, female, neutral) in enumerate(_FAIR_DEMOS):
        source = {"male": female, "female": male, "neutral": (male, female)[i % 2]}[group]
        target = {"male": male, "female": female, "neutral": neutral}[group]
        lines += [f"Sentence: {source}", f"{label}: {target}", ""]
    lines += [f"Sentence: {' '.join(text.split())}", f"{label}:"]
    return "\n".join(lines)


def parse_rewrite(text: str) -> str:
    """The rewrite must be exactly one non-empty line (generation stops at a blank line)."""
    lines = [ln.strip() for ln in text.strip().split("\n")]
    if not lines or not lines[0]:
        raise ParseError("empty rewrite")
    if len(lines) > 1:
        raise ParseError(f"expected one line, got {len(lines)}: {text[:160]!r}")
    if lines[0].startswith(("Sentence:", "Male:", "Female:", "Neutral:")):
        raise ParseError(f"rewrite repeats a prompt label: {lines[0][:120]!r}")
    return lines[0]


# ---- tasks: declared inputs/outputs, format_input(row) and parse_output(text, row) ------------------------------

@dataclass(frozen=True)
class PromptTask:
    """An LLM task: the row fields it reads, the fields it produces, how to prompt, and how to parse strictly.

    ``format_input(row)`` returns a completion prompt (str) or chat messages; ``parse_output(text, row)`` returns the
    output fields or raises :class:`ParseError` (recorded as a failure by the pipelines, never cached).
    """

    name: str
    inputs: tuple
    outputs: tuple
    format_input: object
    parse_output: object


def _qg_parse(text: str, row: dict) -> dict:
    tq = parse_task_query(text)
    return {"task": tq.task, "query": tq.query}


QUERY_GENERATION = PromptTask(
    name="fret_query_generation", inputs=("text", "title", "max_chars"), outputs=("task", "query"),
    format_input=lambda row: query_generation_prompt(passage_text(row.get("title"), row["text"], row["max_chars"])),
    parse_output=_qg_parse)

QUERY_GENERATION_CHAT_INSTRUCTION = (
    "Complete the last example of the list below in the same format. Reply with exactly two lines and nothing "
    "else: first the rest of the task sentence that begins 'Given a query, find a passage that', then 'Query: ' "
    "followed by the query.")


def _qg_chat_parse(text: str, row: dict) -> dict:
    tq = parse_task_query(text, chat=True)
    return {"task": tq.task, "query": tq.query}


QUERY_GENERATION_CHAT = PromptTask(
    name="fret_query_generation_chat", inputs=("text", "title", "max_chars"), outputs=("task", "query"),
    format_input=lambda row: [
        {"role": "system", "content": QUERY_GENERATION_CHAT_INSTRUCTION},
        {"role": "user", "content": query_generation_prompt(passage_text(row.get("title"), row["text"],
                                                                         row["max_chars"]))}],
    parse_output=_qg_chat_parse)
"""Step 1 for chat-only APIs: the same few-shot prompt as one user message, after a system instruction."""


def _rewrite_task(group: str) -> PromptTask:
    return PromptTask(name=f"fair_rewrite_{group}", inputs=("text",), outputs=(group,),
                      format_input=lambda row: fair_rewrite_prompt(row["text"], group),
                      parse_output=lambda text, row: {group: parse_rewrite(text)})


FAIR_REWRITE = {g: _rewrite_task(g) for g in FAIR_GROUPS}


# ---- fairness augmentation, v3: retrieved few-shot demonstrations (for small base models) -----------------------
#
# Gemma 3 270M copied the input under the v2 prompt (1 valid tuple of 35). v3 keeps the v2 line format
# ("Sentence: ..." / "<Group>: ...", so the same parser applies) but shows short demonstrations chosen for the
# source: those that contain the same gender words (as male/female pairs), the most similar last, each going from
# the source's own gender to the target group. Generation is one line (stop at "\n"). Ours, like all demos here.

FAIR_V3_VERSION = "fair-v3"

# (male, female, neutral); the neutral versions use no word of the gender list ("actor" is on it: "performer").
FAIR_V3_BANK = [
    ("A man is playing a guitar.", "A woman is playing a guitar.", "A person is playing a guitar."),
    ("The men are walking down the street.", "The women are walking down the street.",
     "The people are walking down the street."),
    ("He put his keys on the table.", "She put her keys on the table.", "They put their keys on the table."),
    ("A boy is jumping into the pool.", "A girl is jumping into the pool.", "A child is jumping into the pool."),
    ("The teacher thanked him for his help.", "The teacher thanked her for her help.",
     "The teacher thanked them for their help."),
    ("His father works at the hospital.", "Her mother works at the hospital.", "Their parent works at the hospital."),
    ("The king and his son arrived by train.", "The queen and her daughter arrived by train.",
     "The monarch and their child arrived by train."),
    ("The actor thanked his brother on stage.", "The actress thanked her sister on stage.",
     "The performer thanked their sibling on stage."),
    ("A male doctor spoke with the boys.", "A female doctor spoke with the girls.",
     "A doctor spoke with the children."),
    ("he is proud of himself .", "she is proud of herself .", "they are proud of themselves ."),
    ("The guy said his uncle was late.", "The gal said her aunt was late.", "The person said their relative was late."),
    ("The chairman met the spokesman.", "The chairwoman met the spokeswoman.", "The chairperson met the spokesperson."),
    ("Mr. Lee asked the gentlemen to sit.", "Mrs. Lee asked the ladies to sit.", "Mx. Lee asked the people to sit."),
    ("a funny film about a man and his dog .", "a funny film about a woman and her dog .",
     "a funny film about a person and their dog ."),
    ("Two boys and their dad are fishing.", "Two girls and their mom are fishing.",
     "Two children and their parent are fishing."),
    ("The males of the species are larger.", "The females of the species are larger.",
     "The adults of the species are larger."),
]

_FAIR_V3_LABEL = {"male": "Male", "female": "Female", "neutral": "Neutral"}


def _fair_keys(text: str, pair_key) -> set:
    return {k for w in re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)?\.?", text.lower()) for k in pair_key(w)}


def fair_v3_demos(text: str, source_group: str, target: str, *, k: int = 4, variant: int = 0,
                  pair_key=None) -> list[tuple[str, str]]:
    """``k`` (source, target) demonstration pairs for ``text``, least similar first.

    Similarity: the number of gender-pair keys (``pair_key(word)`` -> keys, e.g. ``"her"`` -> ``{"his", "him"}``)
    shared with the demo's source side; ties keep bank order. ``variant`` v > 0 keeps the most similar demo and
    rotates the others by ``v * (k - 1)`` ranks (a later attempt sees other demonstrations). ``source_group`` is
    ``male``, ``female`` or ``mixed`` (a mixed source is shown male demos for female/neutral targets and female
    demos for the male target).
    """
    if target not in FAIR_GROUPS:
        raise ValueError(f"target: expected one of {FAIR_GROUPS}, got {target!r}")
    if source_group not in ("male", "female", "mixed"):
        raise ValueError(f"source_group: expected male, female or mixed, got {source_group!r}")
    if source_group == "mixed":
        source_group = "female" if target == "male" else "male"
    if source_group == target:
        raise ValueError(f"source and target are both {target!r}: nothing to rewrite")
    col = {"male": 0, "female": 1, "neutral": 2}
    pair_key = pair_key or (lambda w: {w})
    want = _fair_keys(text, pair_key)
    ranked = sorted(range(len(FAIR_V3_BANK)),
                    key=lambda i: (-len(want & _fair_keys(FAIR_V3_BANK[i][col[source_group]], pair_key)), i))
    rest, off = ranked[1:], variant * max(1, k - 1)
    off %= max(1, len(rest))
    chosen = ([ranked[0]] + rest[off:] + rest[:off])[:k]
    return [(FAIR_V3_BANK[i][col[source_group]], FAIR_V3_BANK[i][col[target]]) for i in reversed(chosen)]


def fair_rewrite_prompt_v3(text: str, source_group: str, target: str, *, k: int = 4, variant: int = 0,
                           pair_key=None, prefix: str = "") -> str:
    """Few-shot prompt (v3) for ``text`` rewritten into ``target``; ends with ``"\\n<Target>:"``.

    ``prefix`` (the words of ``text`` before its first gender word, which a rewrite keeps) is written after the
    label, so the model continues from the first gender word (the completion is the rest of the rewrite).
    """
    label = _FAIR_V3_LABEL[target] if target in _FAIR_V3_LABEL else None
    demos = fair_v3_demos(text, source_group, target, k=k, variant=variant, pair_key=pair_key)
    what = "gender-neutral (they/them/their, person, parent, child)" if target == "neutral" else target
    lines = [f"Rewrite each sentence as {what}. Change only the gender words; copy every other word.", ""]
    for src, tgt in demos:
        lines += [f"Sentence: {src}", f"{label}: {tgt}", ""]
    prefix = " ".join(prefix.split())
    lines += [f"Sentence: {' '.join(text.split())}", f"{label}: {prefix}" if prefix else f"{label}:"]
    return "\n".join(lines)
