"""The LLM client protocol of data_gen and the small types it speaks in (messages, usage counters).

Every backend (:mod:`data_gen.llm`'s HTTP and llama.cpp clients, :mod:`data_gen.fake`'s deterministic stand-in)
implements :class:`LLM`; this module imports nothing of theirs, so :func:`data_gen.llm.make_llm` can build any of them.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, Union, runtime_checkable

Messages = Sequence[dict]
PromptOrMessages = Union[str, Messages]


@dataclass
class Usage:
    """Thread-safe counters for requests, tokens, cache hits, retries and failures; ``cost`` from per-1M-token prices."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + int(v))

    def cost(self, price_in_per_mtok: float = 0.0, price_out_per_mtok: float = 0.0) -> float:
        return (self.prompt_tokens * price_in_per_mtok + self.completion_tokens * price_out_per_mtok) / 1e6

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {k: getattr(self, k) for k in
                    ("requests", "prompt_tokens", "completion_tokens", "cache_hits", "retries", "failures")}


@runtime_checkable
class LLM(Protocol):
    """What a backend provides. ``name`` is the backend kind and ``model`` the model id; both key the cache."""

    name: str
    model: str
    usage: Usage

    def generate(self, prompt_or_messages: PromptOrMessages, **params: Any) -> str: ...

    def score(self, prompt: str, continuation: str) -> float: ...


def messages_to_text(messages: Messages) -> str:
    """Flatten chat messages for a base (non-chat) model: the contents joined by blank lines, roles dropped."""
    parts = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "content" not in m:
            raise ValueError(f"messages[{i}]: expected a dict with 'role' and 'content', got {m!r}")
        parts.append(str(m["content"]))
    return "\n\n".join(parts)
