"""data_gen: PyTorch-free LLM pipelines (FRet, fairness augmentation). Never imports jax/torch/tensorflow at import time.

Public API::

    from data_gen import (LLM, OpenAICompatLLM, LlamaCppLLM, FakeLLM, CachedLLM, SqliteCache, RateLimiter,
                          FRetPipeline, FRetConfig, load_corpus, FairAugmenter, rule_based_tuple, exact_topk)
"""
from .cache import SqliteCache, cache_key
from .fair import FairAugmenter, load_texts, rewrite_rules, rule_based_tuple, validate_rewrite
from .fake import FakeLLM, FakeOpenAIServer
from .fret import FRetConfig, FRetPipeline, Passage, choose_seeds, fuse_and_select, load_corpus, reciprocal_rank_fusion
from .jsonl import JsonlAppender, JsonlError, load_by_id, read_jsonl
from .limits import RateLimiter, TokenBucket, backoff_delay, parse_retry_after
from .llm import (LLM, CachedLLM, LLMError, LlamaCppLLM, OpenAICompatLLM, PermanentLLMError, TransientLLMError,
                  Usage)
from .prompts import PROMPT_VERSION, ParseError, parse_task_query
from .retrieval import ExactRetriever, exact_topk, hashed_bow_embed

__all__ = [
    "SqliteCache", "cache_key", "FairAugmenter", "load_texts", "rewrite_rules", "rule_based_tuple",
    "validate_rewrite", "FakeLLM", "FakeOpenAIServer", "FRetConfig", "FRetPipeline", "Passage", "choose_seeds",
    "fuse_and_select", "load_corpus", "reciprocal_rank_fusion", "JsonlAppender", "JsonlError", "load_by_id",
    "read_jsonl", "RateLimiter", "TokenBucket", "backoff_delay", "parse_retry_after", "LLM", "CachedLLM", "LLMError",
    "LlamaCppLLM", "OpenAICompatLLM", "PermanentLLMError", "TransientLLMError", "Usage", "PROMPT_VERSION",
    "ParseError", "parse_task_query", "ExactRetriever", "exact_topk", "hashed_bow_embed",
]
