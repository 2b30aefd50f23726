"""Gecko's in-batch softmax contrastive loss (pre-finetuning eq. 2 and fine-tuning eq. 3)."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gecko_jax.losses._common import apply_where, check_float, check_where, concrete_float_array, l2_normalize

__all__ = ["gecko_contrastive"]

_FUNC = "gecko_contrastive"


def gecko_contrastive(
    query: jax.Array,
    positive: jax.Array,
    negatives: jax.Array | None = None,
    *,
    temperature: float | jax.Array = 0.05,
    same_tower: bool = True,
    ids: jax.Array | None = None,
    negative_ids: jax.Array | None = None,
    negatives_where: jax.Array | None = None,
    where: jax.Array | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Gecko contrastive loss: in-batch softmax over positives, own hard negatives and same-tower negatives.

    With cosine similarity :math:`s(x, y) = x^\top y / (\|x\| \|y\|)` and temperature :math:`\tau`, the loss of
    query :math:`i` is (Gecko eq. 3, with the id mask :math:`m_{ij}` and zero or more hard negatives)

    .. math::
        \ell_i = -\log \frac{e^{s(q_i, p_i^+)/\tau}}
        {\sum_{j=1}^{B} m_{ij}\big(e^{s(q_i, p_j^+)/\tau} + 1[j \ne i]\, e^{s(q_i, q_j)/\tau}\big)
         + \sum_{h} e^{s(q_i, p_{i,h}^-)/\tau}},

    where :math:`m_{ii} = 1`, and for :math:`j \ne i`, :math:`m_{ij} = 0` when ``ids[j] == ids[i]`` (the row
    holds a duplicate of query ``i``'s positive, or a classification triple with the same label id) or when row
    ``j`` is masked out by ``where``; otherwise :math:`m_{ij} = 1`. The same-tower term (SamToNe) is present only
    when ``same_tower=True``. Only the query's *own* hard negatives enter its denominator; hard negatives of other
    rows do not (as eq. 3 is printed). Pre-finetuning (eq. 2) is ``negatives=None, same_tower=False``.

    Requirements and relations: embeddings come from one shared encoder (the query side carries the task prefix);
    they are L2-normalised here, so raw mean-pooled vectors are fine. Unlike
    ``optax.losses.ntxent`` (symmetric, two views), this loss is one-directional (query -> passages), takes
    explicit hard negatives, and masks false negatives by id (never by similarity). Wrap it in
    :func:`gecko_jax.losses.matryoshka` for the MRL sub-dimensions.

    Args:
      query: query embeddings, shape ``[..., B, D]`` (the in-batch axis is the one before the feature axis).
      positive: positive passage embeddings, shape ``[..., B, D]``; row ``i`` is the positive of query ``i``.
      negatives: optional hard negatives, shape ``[..., B, D]`` (one per query) or ``[..., B, H, D]`` (``H`` per
        query; pad and use ``negatives_where`` for a variable count, including zero).
      temperature: softmax temperature :math:`\tau > 0` (the paper's value is not published; 0.05 is the usual
        choice for cosine logits).
      same_tower: include the other queries :math:`q_j, j \ne i` as negatives (eq. 3); ``False`` gives eq. 2.
      ids: optional integer ids, shape ``[..., B]``: the id of each row's positive item. Rows sharing query
        ``i``'s id are not its negatives (neither their positive nor their query).
      negative_ids: optional integer ids of the hard negatives, shape ``[..., B]`` or ``[..., B, H]``; a hard
        negative whose id equals the query's ``ids`` entry is a false negative and is dropped. Needs ``ids``.
      negatives_where: optional boolean mask of real (non-padding) hard negatives, same shape as
        ``negative_ids``.
      where: optional boolean mask of valid rows, shape ``[..., B]``. A masked row has loss 0 and its query,
        positive and hard negatives appear in no other row's denominator (padding rows of a fixed-shape batch).
      axis: the feature axis of ``query``, ``positive`` and ``[..., B, D]`` ``negatives``; ``[..., B, H, D]``
        negatives need it last.

    Returns:
      Per-query losses, shape ``[..., B]``. Average over the valid rows (``sum(loss) / sum(where)``) for eq. 3's
      :math:`\frac{1}{B}\sum_i`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gecko_jax.losses import gecko_contrastive
      >>> q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> p = jnp.array([[0.9, 0.1], [0.1, 0.9]])
      >>> gecko_contrastive(q, p, temperature=1.0, same_tower=False).round(4)
      Array([0.346, 0.346], dtype=float32)

    References:
      Lee et al., "Gecko: Versatile Text Embeddings Distilled from Large Language Models", arXiv:2403.20327
      (2024), eqs. 2-3; same-tower negatives: Moiseev et al., "SamToNe", 2023.
    """
    query = check_float("query", query, _FUNC)
    positive = check_float("positive", positive, _FUNC)
    if query.ndim < 2:
        raise ValueError(f"{_FUNC}: `query` must have shape [..., B, D], got {query.shape}")
    if positive.shape != query.shape:
        raise ValueError(f"{_FUNC}: `positive` must have the shape of `query` {query.shape}, got {positive.shape}")
    ax = axis % query.ndim
    query = jnp.moveaxis(query, ax, -1)
    positive = jnp.moveaxis(positive, ax, -1)
    b = query.shape[-2]
    _check_temperature(temperature)

    q = l2_normalize(query)
    p = l2_normalize(positive)
    eye = jnp.eye(b, dtype=bool)
    where = check_where(where, query.shape[:-1], _FUNC)
    ids = _check_ids("ids", ids, query.shape[:-1])

    # keep[..., i, j]: may row j's items be negatives of query i (beyond the own positive, always kept)?
    keep = ~eye
    if ids is not None:
        keep = keep & (ids[..., :, None] != ids[..., None, :])
    if where is not None:
        keep = keep & where[..., None, :]

    s_qp = jnp.einsum("...id,...jd->...ij", q, p) / temperature
    logits = [jnp.where(eye | keep, s_qp, -jnp.inf)]
    if same_tower:
        s_qq = jnp.einsum("...id,...jd->...ij", q, q) / temperature
        logits.append(jnp.where(keep, s_qq, -jnp.inf))
    if negatives is not None:
        logits.append(_hard_negative_logits(q, negatives, ids, negative_ids, negatives_where, ax, temperature))
    elif negative_ids is not None or negatives_where is not None:
        raise ValueError(f"{_FUNC}: `negative_ids` / `negatives_where` given without `negatives`")

    all_logits = jnp.concatenate(logits, axis=-1)
    positive_logit = jnp.diagonal(s_qp, axis1=-2, axis2=-1)
    loss = jax.nn.logsumexp(all_logits, axis=-1) - positive_logit
    return apply_where(loss, where)


def _hard_negative_logits(q, negatives, ids, negative_ids, negatives_where, ax, temperature) -> jax.Array:
    """Similarities ``[..., B, H]`` of each query to its own hard negatives, -inf where dropped."""
    negatives = check_float("negatives", negatives, _FUNC)
    qdim = q.ndim
    if negatives.ndim == qdim:
        negatives = jnp.moveaxis(negatives, ax, -1)[..., None, :]
        single = True
    elif negatives.ndim == qdim + 1:
        if ax != qdim - 1:
            raise ValueError(f"{_FUNC}: `negatives` of shape [..., B, H, D] need the feature axis last (axis=-1), "
                             f"got axis={ax - qdim}")
        single = False
    else:
        raise ValueError(
            f"{_FUNC}: `negatives` must have shape [..., B, D] or [..., B, H, D] with query {q.shape}, "
            f"got {negatives.shape}")
    if negatives.shape[:-2] != q.shape[:-1] or negatives.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"{_FUNC}: `negatives` must have shape [..., B, D] or [..., B, H, D] matching query {q.shape}, "
            f"got {negatives.shape}")
    neg_shape = negatives.shape[:-1]  # [..., B, H]
    n = l2_normalize(negatives)
    s_qn = jnp.einsum("...id,...ihd->...ih", q, n) / temperature
    keep = jnp.ones(neg_shape, dtype=bool)
    if negatives_where is not None:
        nw = jnp.asarray(negatives_where)
        if nw.dtype != jnp.bool_:
            raise TypeError(f"{_FUNC}: `negatives_where` must be a boolean mask, got dtype {nw.dtype}")
        nw = nw[..., None] if single else nw
        if nw.shape != neg_shape:
            raise ValueError(f"{_FUNC}: `negatives_where` must have shape {neg_shape[:-1] if single else neg_shape}, "
                             f"got {jnp.asarray(negatives_where).shape}")
        keep = keep & nw
    if negative_ids is not None:
        if ids is None:
            raise ValueError(f"{_FUNC}: `negative_ids` needs `ids` (the id each hard negative is compared with)")
        nid = jnp.asarray(negative_ids)
        if not jnp.issubdtype(nid.dtype, jnp.integer):
            raise TypeError(f"{_FUNC}: `negative_ids` must be integers, got dtype {nid.dtype}")
        nid = nid[..., None] if single else nid
        if nid.shape != neg_shape:
            raise ValueError(f"{_FUNC}: `negative_ids` must have shape {neg_shape[:-1] if single else neg_shape}, "
                             f"got {jnp.asarray(negative_ids).shape}")
        keep = keep & (nid != ids[..., None])
    return jnp.where(keep, s_qn, -jnp.inf)


def _check_ids(name: str, ids: Any, shape: tuple[int, ...]) -> jax.Array | None:
    if ids is None:
        return None
    ids = jnp.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{_FUNC}: `{name}` must be integer ids, got dtype {ids.dtype}")
    if ids.shape != shape:
        raise ValueError(f"{_FUNC}: `{name}` must have shape {shape} (one id per row), got {ids.shape}")
    return ids


def _check_temperature(temperature: Any) -> None:
    t = concrete_float_array(temperature)
    if t is not None and (t.ndim != 0 or not t > 0):
        raise ValueError(f"{_FUNC}: `temperature` must be a positive scalar, got {temperature!r}")
