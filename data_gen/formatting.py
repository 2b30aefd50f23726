"""Gecko's unified input format (PAPERS.md 1.4, Appendix B Table 7): the one definition, used by FRet's retrieval
(data_gen) and by every encoder input of gecko_jax (``gecko_jax.data.formatting`` re-exports it).

Asymmetric (retrieval):  query  = "task: {task} | query: {text}"
                         target = "title: {title} | text: {text}"
Symmetric (STS, classification, clustering): both sides "task: {task} | query: {text}".

A missing (None or empty) title is written ``title: none``: the paper's table does not say, and ``none`` is what
EmbeddingGemma, Gecko's open successor, prescribes; an empty field (``title:  | text:``) is a shape the model never
saw in training. With no task, queries are the raw text and documents ``title + " " + text`` (the
sentence-transformers convention all-MiniLM-L6-v2 expects).
"""
from __future__ import annotations


def format_query(text: str, task: str | None = None) -> str:
    """``task: {task} | query: {text}``; the raw text when ``task`` is None."""
    if task is None:
        return text
    return f"task: {task} | query: {text}"


def format_document(text: str, title: str | None = None, *, gecko_format: bool = True) -> str:
    """``title: {title} | text: {text}`` (title "none" when missing) in Gecko format, else ``title + " " + text``."""
    if gecko_format:
        return f"title: {title if title else 'none'} | text: {text}"
    return f"{title} {text}" if title else text
