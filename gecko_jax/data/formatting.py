"""Gecko's unified input format (PAPERS.md 1.4, Appendix B Table 7), defined once in :mod:`data_gen.formatting`.

Asymmetric (retrieval):  query  = "task: {task} | query: {text}"
                         target = "title: {title} | text: {text}"
Symmetric (STS, classification, clustering): both sides "task: {task} | query: {text}".
With no task, queries are the raw text; documents without a title are "title: none | text: {text}"
only when ``gecko_format`` is requested, otherwise the raw text (title + " " + text when a title exists),
which is what sentence-transformers models such as all-MiniLM-L6-v2 expect.
"""
from __future__ import annotations

from typing import Literal

from data_gen.formatting import format_document, format_query  # noqa: F401  (the one definition, re-exported)

Kind = Literal["query", "document"]


def format_text(
    text: str,
    *,
    kind: Kind = "query",
    task: str | None = None,
    title: str | None = None,
    symmetric: bool = False,
) -> str:
    """Format one input for the encoder.

    Queries get the task prefix when a task is given. Documents get ``title: | text:`` when a task is
    given (the model was trained with Gecko formatting), or the task prefix when ``symmetric`` is set.
    With ``task=None`` documents are ``title + " " + text`` (plain sentence-transformers convention).
    """
    if kind not in ("query", "document"):
        raise ValueError(f"kind must be 'query' or 'document', got {kind!r}")
    if kind == "query" or symmetric:
        return format_query(text, task)
    return format_document(text, title, gecko_format=task is not None)
