"""data_gen: PyTorch-free LLM pipelines (FRet, fairness augmentation). Never imports jax/torch/tensorflow at import time.

Public API::

    from data_gen import (LLM, OpenAICompatLLM, LlamaCppLLM, FakeLLM, CachedLLM, SqliteCache, RateLimiter,
                          FRetPipeline, FRetConfig, load_corpus, open_corpus, FairAugmenter, rule_based_tuple,
                          exact_topk, ExactRetriever, VectorShards, ScoringPlan, plan_scoring, calibrate)

The Apache Beam engine (``data_gen.beam_fret``, ``pip install 'gecko-jax[scale]'``) and the ANN indexes
(``data_gen.ann``: FAISS, ScaNN) are imported only when used.

Errors (``data_gen.errors``): every expected failure is a ``DataGenError`` with a one-line message naming the file
or server at fault and the ``exit_code`` the CLI returns (``InputError`` 2, ``FatalLLMError`` 4, ``StorageError`` 5).
"""
from .cache import SqliteCache, cache_key
from .errors import CacheError, DataGenError, InputError, OutputPathError, StorageError, redact
from .fair import FairAugmenter, load_texts, rewrite_rules, rule_based_tuple, validate_rewrite
from .fake import FakeLLM, FakeOpenAIServer
from .files import atomic_file, check_outputs
from .corpus import CorpusStore, Passage, open_corpus
from .fret import FRetConfig, FRetPipeline, choose_seeds, fuse_and_select, load_corpus, reciprocal_rank_fusion
from .jsonl import JsonlAppender, JsonlError, load_by_id, read_jsonl
from .limits import RateLimiter, TokenBucket, backoff_delay, parse_retry_after
from .llm import (LLM, CachedLLM, FatalLLMError, LLMError, LlamaCppLLM, OpenAICompatLLM, PermanentLLMError,
                  TransientLLMError, Usage)
from .prompts import PROMPT_VERSION, ParseError, parse_task_query
from .retrieval import ExactRetriever, Retriever, VectorShards, exact_topk, hashed_bow_embed
from .scoring import ScoringPlan, plan_scoring
from .stages import CalibrationCounts, calibrate, sample_seed_ids

__all__ = [
    "SqliteCache", "cache_key", "FairAugmenter", "load_texts", "rewrite_rules", "rule_based_tuple",
    "validate_rewrite", "FakeLLM", "FakeOpenAIServer", "FRetConfig", "FRetPipeline", "Passage", "choose_seeds",
    "fuse_and_select", "load_corpus", "reciprocal_rank_fusion", "JsonlAppender", "JsonlError", "load_by_id",
    "read_jsonl", "RateLimiter", "TokenBucket", "backoff_delay", "parse_retry_after", "LLM", "CachedLLM", "LLMError",
    "LlamaCppLLM", "OpenAICompatLLM", "PermanentLLMError", "TransientLLMError", "Usage", "PROMPT_VERSION",
    "ParseError", "parse_task_query", "ExactRetriever", "exact_topk", "hashed_bow_embed", "FatalLLMError",
    "DataGenError", "InputError", "OutputPathError", "StorageError", "CacheError", "redact", "atomic_file",
    "check_outputs", "CorpusStore", "open_corpus", "Retriever", "VectorShards", "ScoringPlan", "plan_scoring",
    "CalibrationCounts", "calibrate", "sample_seed_ids",
]
