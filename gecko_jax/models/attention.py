"""Multi-head scaled dot-product attention shared by the encoder backbones, written for XLA:CPU.

    out = attention(q, k, v, allowed)          # q, k, v: [B, L, heads, head_dim]; allowed: bool [B, 1|heads, 1|L, L]

Mathematically ``softmax(q k^T / sqrt(d) masked) v``; the formulation is chosen for speed on CPU (profiled on a
256-token MiniLM row, BENCHMARKS.md "Encode speed: profile"):

- **Heads first, once.** q, k and v are laid out ``[B, heads, L, d]`` with one transpose each, so both batched
  matmuls run on contiguous per-head blocks (the ``bqhd`` einsum form made XLA insert layout copies around them).
- **Boolean mask, no float bias tensor.** ``where(allowed, s, -inf)`` inside the softmax fusion instead of adding a
  ``finfo.min`` bias that XLA broadcast to a ``[B, heads, L, L]`` float buffer per call.
- **Deferred normalisation.** ``exp(s - max)`` goes straight into the second matmul and the ``[B, heads, L, d]``
  result is divided by the row sums, instead of normalising the ``[B, heads, L, L]`` probabilities first: one pass
  over the big tensor less. Dropout (training) scales ``exp`` elementwise, which commutes with the division.
- **Both matmuls through** :mod:`gecko_jax.models.matmul`: same values as the einsums; in training, the key and value
  gradients are computed with the small ``[B, heads, L, d]`` operand transposed, so that XLA:CPU runs them on its
  YNNPACK kernels instead of Eigen's.

A ``lax.map`` over batch rows (each row's scores in cache) measured the same as this batched form inside the whole
model, so the batched form stays: it is also the one gradients and accelerators handle best.

A fully masked query row (padding rows, batch filler) gives zeros, not NaN: its max is ``-inf`` and is replaced by 0.

**Implementations** (``EncoderConfig.attention_impl``, chosen per call at trace time by :func:`resolve_impl`):

- ``"dense"``: the formulation above (the CPU path; numerics and speed as tuned in issue 21).
- ``"xla"``: ``jax.nn.dot_product_attention(implementation="xla")`` with the exact boolean visibility as ``mask``
  (and MPNet's relative bias as ``bias``, Gemma's fewer key/value heads natively).
- ``"cudnn"``: ``jax.nn.dot_product_attention(implementation="cudnn")``, cuDNN flash attention on a CUDA GPU
  (bfloat16/float16 compute, head_dim a multiple of 8 and <= 128, <= 256 from Hopper on). Right-padded rows go in
  as ``query_seq_lengths``/``key_value_seq_lengths`` (no mask tensor; checked at run time, other paddings take the
  mask branch of a ``lax.cond``), causal attention as ``is_causal`` and the causal sliding window as
  ``local_window_size``; packed rows (this jax has no segment ids in the public API) and the bidirectional window
  go in as a boolean ``[B, 1, L, L]`` mask, which cuDNN turns into an additive bias. Padding *query* rows are
  skipped by the kernel and come out as zeros (dense gives them their attention over the real keys; no pooling
  reads them).
- ``"auto"`` (default): ``"cudnn"`` where it applies (CUDA device of compute capability >= 8.0, 16-bit compute,
  the head_dim above, even length, no attention dropout), ``"dense"`` everywhere else, so CPU runs are unchanged.

The fused API has no dropout on the attention weights: while training with ``attention_dropout > 0`` every
implementation falls back to ``"dense"`` (one log line per process); set ``attention_dropout=0`` to train with the
fused kernel (inference is unaffected). Query rows that see no key give zeros here and in the fused
implementations (fixed up: the API's large finite mask value would give them the mean of the values; Gemma's own
dense path does give that mean, which no pooling reads).
"""
from __future__ import annotations

import logging
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gecko_jax.errors import ConfigError
from gecko_jax.models import matmul

log = logging.getLogger(__name__)

IMPLEMENTATIONS = ("dense", "xla", "cudnn", "auto")


def _core(q, k, v, allowed, dropout: Callable | None, bias=None):
    """``q, k, v``: ``[..., heads, L, d]`` (q already scaled); ``allowed`` (and ``bias``, if any) broadcastable to
    ``[..., heads, L, L]``."""
    s = matmul.matmul_nt(q, k, preferred_element_type=jnp.float32)
    if bias is not None:
        s = s + bias
    s = jnp.where(allowed, s, -jnp.inf)
    # Any shift leaves softmax unchanged, so the max carries no gradient (and costs no backward pass).
    m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0.0)  # fully masked row: exp(-inf) = 0 everywhere, no NaN
    e = jnp.exp(s - m)
    den = jnp.sum(e, axis=-1, keepdims=True)
    if dropout is not None:
        e = dropout(e)
    out = matmul.matmul(e.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out / jnp.maximum(den, jnp.finfo(jnp.float32).tiny)


def attention(q, k, v, allowed, *, dropout: Callable | None = None, bias=None, impl: str = "dense"):
    """Multi-head attention: ``[B, L, heads, d]`` x3 -> ``[B, L, heads * d]``.

    Args:
      q, k, v: ``[B, L, heads, d]`` in the compute dtype (q is scaled by ``1/sqrt(d)`` here).
      allowed: ``bool`` broadcastable to ``[B, heads, L, L]`` (e.g. ``[B, 1, 1, L]`` padding mask or
        ``[B, 1, L, L]`` block-diagonal packing mask): True where query ``i`` may attend to key ``j``.
      dropout: elementwise function applied to the unnormalised attention weights (training), or None.
      bias: optional ``float32`` additive scores broadcastable to ``[B, heads, L, L]`` (MPNet's relative position
        bias); added before the mask. None (BERT, RoBERTa): no float ``[.., L, L]`` buffer at all.
      impl: ``"dense" | "xla" | "cudnn" | "auto"`` (module docstring); resolved here by :func:`resolve_impl`.

    Returns:
      ``float32[B, L, heads * d]`` (dense), the compute dtype (fused implementations).
    """
    b, length, heads, d = q.shape
    impl = resolve_impl(impl, dtype=q.dtype, head_dim=d, length=length, dropout=dropout is not None)
    q = q * jnp.asarray(1.0 / np.sqrt(d), q.dtype)
    if impl != "dense":
        key_mask, pairs = None, None
        if allowed.ndim == 4 and allowed.shape[1] == 1 and allowed.shape[2] == 1:
            key_mask = jnp.broadcast_to(allowed[:, 0, 0, :], (b, length))  # padding mask: lengths on cuDNN
        else:
            pairs = allowed
        out = fused_attention(q, k, v, implementation=impl, key_mask=key_mask, pairs=pairs, bias=bias)
        return out.reshape(b, length, heads * d)
    q, k, v = (jnp.transpose(t, (0, 2, 1, 3)) for t in (q, k, v))  # [B, heads, L, d]
    out = _core(q, k, v, allowed, dropout, bias)
    return jnp.transpose(out, (0, 2, 1, 3)).reshape(b, length, heads * d)


# ------------------------------------------------------------------------------------------ fused implementations

_LOGGED: set = set()


def _log_once(level: int, message: str) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        log.log(level, message)


def _cuda_capability() -> tuple[int, int] | None:
    """Compute capability of the first local device if it is a CUDA GPU, else None (CPU, TPU, ROCm)."""
    try:
        dev = jax.local_devices()[0]
    except RuntimeError:
        return None
    cap = getattr(dev, "compute_capability", None) if dev.platform == "gpu" else None
    if not cap:
        return None
    major, _, minor = str(cap).partition(".")
    return int(major), int(minor or 0)


def cudnn_unsupported(*, dtype, head_dim: int, length: int) -> str | None:
    """Why cuDNN flash attention cannot run this call here (None: it can). Mirrors jax's own checks."""
    cap = _cuda_capability()
    if cap is None:
        return f"needs a CUDA GPU (this jax's device is {jax.local_devices()[0].platform!r})"
    if cap < (8, 0):
        return f"needs compute capability >= 8.0 (this GPU: {cap[0]}.{cap[1]})"
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return f"needs bfloat16 or float16 compute (got {jnp.dtype(dtype).name}: set the encoder dtype to bfloat16)"
    limit = 256 if cap >= (9, 0) else 128
    if head_dim % 8 or head_dim > limit:
        return f"needs head_dim a multiple of 8 and <= {limit} (got {head_dim})"
    if length % 2:
        return f"needs an even sequence length (got {length})"
    return None


def resolve_impl(requested: str, *, dtype, head_dim: int, length: int, dropout: bool) -> str:
    """``"dense" | "xla" | "cudnn"`` for one attention call (at trace time).

    Raises:
      ConfigError: ``requested`` is not one of ``IMPLEMENTATIONS``, or ``"cudnn"`` cannot run here (one line: why).
    """
    if requested not in IMPLEMENTATIONS:
        raise ConfigError(f"attention_impl must be one of {IMPLEMENTATIONS}, got {requested!r}")
    if requested == "dense":
        return "dense"
    if requested == "cudnn":
        why = cudnn_unsupported(dtype=dtype, head_dim=head_dim, length=length)
        if why is not None:
            raise ConfigError(f"attention_impl='cudnn' {why}; use 'auto' (cuDNN where it runs, dense elsewhere), "
                              "'xla' or 'dense'")
    chosen = requested
    if requested == "auto":
        if cudnn_unsupported(dtype=dtype, head_dim=head_dim, length=length) is not None:
            return "dense"
        chosen = "cudnn"
    if dropout:
        _log_once(logging.INFO if requested == "auto" else logging.WARNING,
                  f"attention_impl={requested!r}: the fused kernel has no attention dropout; using 'dense' while "
                  "training with attention_dropout > 0 (set attention_dropout=0 to train with the fused kernel)")
        return "dense"
    _log_once(logging.INFO, f"attention_impl={requested!r}: jax.nn.dot_product_attention(implementation={chosen!r})")
    return chosen


def visibility_mask(length: int, *, key_mask=None, pairs=None, causal: bool = False,
                    window: tuple[int, int] | None = None):
    """``bool[B|1, 1, L, L]``: query ``q`` sees key ``k`` iff ``key_mask[k]`` and ``pairs[q, k]`` and (causal)
    ``k <= q`` and (window ``(left, right)``) ``q - left <= k <= q + right``."""
    idx = jnp.arange(length)
    delta = idx[:, None] - idx[None, :]  # q - k
    vis = jnp.ones((1, 1, length, length), bool)
    if key_mask is not None:
        vis = vis & key_mask[:, None, None, :]
    if pairs is not None:
        vis = vis & pairs
    if causal:
        vis = vis & (delta >= 0)
    if window is not None:
        vis = vis & (delta <= window[0]) & (-delta <= window[1])
    return vis


def fused_attention(q, k, v, *, implementation: str, key_mask=None, pairs=None, bias=None, causal: bool = False,
                    window: tuple[int, int] | None = None, use_lengths: bool | None = None):
    """``jax.nn.dot_product_attention`` with the visibility of :func:`visibility_mask`; ``[B, L, N, d]`` out.

    Args:
      q: ``[B, L, N, d]``, already scaled (the API's ``scale`` is 1). k, v: ``[B, L, K, d]``, ``K`` dividing ``N``.
      implementation: ``"xla"`` or ``"cudnn"``.
      key_mask: ``bool[B, L]`` real keys, or None. pairs: ``bool`` broadcastable to ``[B, 1, L, L]``, or None.
      bias: float scores broadcastable to ``[B, N, L, L]`` added before the mask (MPNet), or None.
      causal, window: as :func:`visibility_mask` (Gemma).
      use_lengths: pass right-padded ``key_mask`` rows as sequence lengths (and ``causal``/causal ``window`` as the
        API's flags) instead of a mask tensor; default: on cuDNN only. Padding query rows then come out as zeros.

    Returns:
      ``[B, L, N, d]`` in the compute dtype; query rows that see no key are zeros.
    """
    b, length = q.shape[:2]
    if use_lengths is None:
        use_lengths = implementation == "cudnn"
    if bias is not None and implementation == "cudnn":
        bias = bias.astype(q.dtype)  # cuDNN takes the bias in the compute dtype

    def with_mask():
        vis = visibility_mask(length, key_mask=key_mask, pairs=pairs, causal=causal, window=window)
        out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=vis, scale=1.0, implementation=implementation)
        sees = jnp.transpose(jnp.any(vis, axis=-1), (0, 2, 1))[..., None]  # [B|1, L, 1|heads, 1]
        return jnp.where(sees, out, jnp.zeros((), out.dtype))

    flags_fit = window is None or (causal and window[1] == 0)  # cuDNN: only a left window, and only when causal
    if not (use_lengths and key_mask is not None and pairs is None and flags_fit):
        return with_mask()

    lengths = jnp.sum(key_mask, axis=-1, dtype=jnp.int32)
    right_padded = jnp.all(key_mask == (jnp.arange(length) < lengths[:, None]))

    def with_lengths():
        # A row of batch filler (length 0) is given one key so that no kernel row is empty; it is zeroed below.
        seq = jnp.maximum(lengths, 1)
        out = jax.nn.dot_product_attention(
            q, k, v, bias=bias, scale=1.0, is_causal=causal, query_seq_lengths=seq, key_value_seq_lengths=seq,
            local_window_size=None if window is None else (window[0], 0), implementation=implementation)
        real = (jnp.arange(length) < lengths[:, None])[:, :, None, None]  # [B, L, 1, 1]
        return jnp.where(real, out, jnp.zeros((), out.dtype))

    return jax.lax.cond(right_padded, with_lengths, with_mask)


def allowed_mask(attention_mask, packed_ids=None):
    """Boolean attention mask: ``[B, 1, 1, L]`` from a padding mask, or ``[B, 1, L, L]`` block-diagonal from
    ``packed_ids`` (several sequences per row, numbered 1, 2, ...; 0 = padding)."""
    if packed_ids is None:
        return (attention_mask > 0)[:, None, None, :]
    return ((packed_ids[:, :, None] == packed_ids[:, None, :]) & (packed_ids[:, None, :] > 0))[:, None]
