"""Tests for gecko_jax.losses.gecko_contrastive against a loop-based numpy reading of Gecko eq. 3."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from gecko_jax.losses import gecko_contrastive

TOL = dict(rtol=1e-5, atol=1e-5)


def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def ref_gecko(q, p, negs=None, *, tau, same_tower, ids=None, neg_ids=None, neg_valid=None, where=None):
    """Gecko eq. 3 written term by term (python loops, float64).

    negs[i] is a list of hard negatives of query i; neg_ids[i][h] / neg_valid[i][h] describe them.
    """
    q, p = np.asarray(q, np.float64), np.asarray(p, np.float64)
    b = len(q)
    where = np.ones(b, bool) if where is None else np.asarray(where)
    out = np.zeros(b)
    for i in range(b):
        if not where[i]:
            continue
        num = math.exp(_cos(q[i], p[i]) / tau)
        den = 0.0
        for j in range(b):
            if j == i:
                den += num
                continue
            if not where[j] or (ids is not None and ids[j] == ids[i]):
                continue
            den += math.exp(_cos(q[i], p[j]) / tau)
            if same_tower:
                den += math.exp(_cos(q[i], q[j]) / tau)
        if negs is not None:
            for h, n in enumerate(negs[i]):
                if neg_valid is not None and not neg_valid[i][h]:
                    continue
                if neg_ids is not None and neg_ids[i][h] == ids[i]:
                    continue
                den += math.exp(_cos(q[i], np.asarray(n, np.float64)) / tau)
        out[i] = -math.log(num / den)
    return out


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(5, 6)).astype(np.float32)
    p = (q + 0.7 * rng.normal(size=(5, 6))).astype(np.float32)
    n = rng.normal(size=(5, 3, 6)).astype(np.float32)
    return q, p, n


def test_golden_orthonormal():
    # Orthonormal queries/positives, negatives = -q, tau = 1: closed forms written from eq. 3 by hand.
    q = jnp.eye(2)
    golden_pre = math.log(1 + math.exp(-1))                      # e / (e + e^0)
    golden_tower = math.log(1 + 2 * math.exp(-1))                # + e^{s(q0, q1)} = 1
    golden_full = math.log(1 + 2 * math.exp(-1) + math.exp(-2))  # + e^{-1} of the own hard negative
    np.testing.assert_allclose(gecko_contrastive(q, q, temperature=1.0, same_tower=False), [golden_pre] * 2, **TOL)
    np.testing.assert_allclose(gecko_contrastive(q, q, temperature=1.0), [golden_tower] * 2, **TOL)
    np.testing.assert_allclose(gecko_contrastive(q, q, -q, temperature=1.0), [golden_full] * 2, **TOL)


@pytest.mark.parametrize("same_tower", [False, True])
@pytest.mark.parametrize("neg_kind", ["none", "one", "many"])
def test_matches_reference(batch, same_tower, neg_kind):
    q, p, n = batch
    negatives = {"none": None, "one": n[:, 0], "many": n}[neg_kind]
    ref_negs = {"none": None, "one": [[x] for x in n[:, 0]], "many": [list(x) for x in n]}[neg_kind]
    got = gecko_contrastive(q, p, negatives, temperature=0.1, same_tower=same_tower)
    want = ref_gecko(q, p, ref_negs, tau=0.1, same_tower=same_tower)
    np.testing.assert_allclose(got, want, **TOL)


def test_prefinetuning_is_softmax_ce_over_positives(batch):
    # eq. 2 == cross-entropy of the [B, B] cosine/tau logits with the diagonal as labels.
    q, p, _ = batch
    qn = q / np.linalg.norm(q, axis=-1, keepdims=True)
    pn = p / np.linalg.norm(p, axis=-1, keepdims=True)
    want = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(qn @ pn.T / 0.05), jnp.arange(5))
    np.testing.assert_allclose(gecko_contrastive(q, p, temperature=0.05, same_tower=False), want, **TOL)


def test_duplicate_ids_are_not_negatives(batch):
    q, p, n = batch
    ids = np.array([7, 3, 7, 1, 3])
    got = np.asarray(gecko_contrastive(q, p, n, temperature=0.1, ids=ids))
    np.testing.assert_allclose(got, ref_gecko(q, p, list(n), tau=0.1, same_tower=True, ids=ids), **TOL)
    # Exactly the reference's change: remove the terms of same-id rows from the unmasked denominator.
    plain = np.asarray(gecko_contrastive(q, p, n, temperature=0.1))
    for i, j in [(0, 2), (2, 0), (1, 4), (4, 1)]:
        removed = math.exp(_cos(q[i], p[j]) / 0.1) + math.exp(_cos(q[i], q[j]) / 0.1)
        s_ii = _cos(q[i], p[i]) / 0.1
        want = math.log(math.exp(plain[i] + s_ii) - removed) - s_ii
        np.testing.assert_allclose(got[i], want, **TOL)
    np.testing.assert_allclose(got[3], plain[3], **TOL)  # unique id: unchanged
    assert np.all(got[[0, 1, 2, 4]] < plain[[0, 1, 2, 4]])


def test_duplicate_ids_with_identical_positives():
    # A batch holding the same (query, positive) twice: with ids the duplicate is no false negative.
    q = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    got = gecko_contrastive(q, q, temperature=1.0, same_tower=False, ids=jnp.array([5, 5, 6]))
    np.testing.assert_allclose(got[:2], [math.log(1 + math.exp(-1))] * 2, **TOL)
    unmasked = gecko_contrastive(q, q, temperature=1.0, same_tower=False)
    np.testing.assert_allclose(unmasked[:2], [math.log(2 + math.exp(-1))] * 2, **TOL)


def test_negative_ids_and_padding(batch):
    q, p, n = batch
    ids = np.arange(5)
    neg_ids = np.array([[0, 10, 11], [12, 13, 1], [14, 15, 16], [17, 18, 19], [4, 4, 20]])
    valid = np.array([[1, 1, 0], [1, 1, 1], [0, 0, 0], [1, 0, 1], [1, 1, 1]], bool)
    got = gecko_contrastive(q, p, n, temperature=0.2, ids=ids, negative_ids=neg_ids, negatives_where=valid)
    want = ref_gecko(q, p, list(n), tau=0.2, same_tower=True, ids=ids, neg_ids=neg_ids, neg_valid=valid)
    np.testing.assert_allclose(got, want, **TOL)
    # Row 2 has no hard negative at all: same as the loss without negatives for that row.
    np.testing.assert_allclose(got[2], gecko_contrastive(q, p, temperature=0.2, ids=ids)[2], **TOL)


def test_where_masks_rows_everywhere(batch):
    q, p, n = batch
    where = np.array([True, False, True, True, False])
    got = gecko_contrastive(q, p, n, temperature=0.1, where=where)
    np.testing.assert_allclose(got, ref_gecko(q, p, list(n), tau=0.1, same_tower=True, where=where), **TOL)
    keep = np.flatnonzero(where)
    np.testing.assert_allclose(got[keep], gecko_contrastive(q[keep], p[keep], n[keep], temperature=0.1), **TOL)
    assert np.all(np.asarray(got)[~where] == 0)
    # Masked rows get no gradient from any row: they are padding.
    g = jax.grad(lambda q_, p_, n_: gecko_contrastive(q_, p_, n_, temperature=0.1, where=where).sum(),
                 argnums=(0, 1, 2))(q, p, n)
    for arr in g:
        assert np.all(np.asarray(arr)[~where] == 0)
        assert np.any(np.asarray(arr)[where] != 0)


def test_jit_and_batch_shapes(batch):
    q, p, n = batch
    ids = np.array([0, 1, 0, 2, 3])
    fn = lambda a, b, c, i: gecko_contrastive(a, b, c, temperature=0.1, ids=i)
    eager = fn(q, p, n, ids)
    np.testing.assert_allclose(jax.jit(fn)(q, p, n, ids), eager, **TOL)
    # Extra leading axes == independent batches (vmap and the ellipsis path agree).
    q2, p2, n2 = np.stack([q, p]), np.stack([p, q]), np.stack([n, n[:, ::-1]])
    ids2 = np.stack([ids, ids[::-1]])
    stacked = fn(q2, p2, n2, ids2)
    assert stacked.shape == (2, 5)
    np.testing.assert_allclose(stacked, jax.vmap(fn)(q2, p2, n2, ids2), **TOL)
    np.testing.assert_allclose(stacked[1], fn(p, q, n[:, ::-1], ids[::-1]), **TOL)
    # Feature axis first.
    np.testing.assert_allclose(gecko_contrastive(q.T, p.T, n[:, 0].T, temperature=0.1, axis=0),
                               gecko_contrastive(q, p, n[:, 0], temperature=0.1), **TOL)


def test_check_grads(batch):
    q, p, n = batch
    ids = np.array([0, 1, 0, 2, 3])
    with jax.enable_x64(True):
        args = tuple(jnp.asarray(x, jnp.float64) for x in (q, p, n))
        # jit only to keep the many finite-difference evaluations fast; the maths is the eager one.
        fn = jax.jit(lambda a, b, c: gecko_contrastive(a, b, c, temperature=0.3, ids=ids,
                                                       where=np.array([1, 1, 1, 0, 1], bool)))
        check_grads(fn, args, order=1, modes=("fwd", "rev"))
        pre = jax.jit(lambda a, b: gecko_contrastive(a, b, temperature=0.3, same_tower=False))
        check_grads(pre, args[:2], order=2, modes=("rev",))


def test_scale_invariance(batch):
    q, p, n = batch
    np.testing.assert_allclose(gecko_contrastive(3.0 * q, 0.2 * p, 5.0 * n, temperature=0.1),
                               gecko_contrastive(q, p, n, temperature=0.1), **TOL)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(temperature=0.0), ValueError, "temperature"),
    (dict(ids=np.zeros(4, np.int32)), ValueError, r"ids.*\(5,\)"),
    (dict(ids=np.zeros(5, np.float32)), TypeError, "ids"),
    (dict(where=np.ones(5, np.int32)), TypeError, "where"),
    (dict(negative_ids=np.zeros(5, np.int32)), ValueError, "without `negatives`"),
])
def test_bad_input(batch, kwargs, exc, match):
    q, p, _ = batch
    with pytest.raises(exc, match=match):
        gecko_contrastive(q, p, **kwargs)


def test_bad_shapes(batch):
    q, p, n = batch
    with pytest.raises(ValueError, match="positive"):
        gecko_contrastive(q, p[:4])
    with pytest.raises(ValueError, match="negatives"):
        gecko_contrastive(q, p, n[:4])
    with pytest.raises(ValueError, match="negative_ids"):
        gecko_contrastive(q, p, n, ids=np.arange(5), negative_ids=np.arange(5))
    with pytest.raises(ValueError, match=r"\[\.\.\., B, D\]"):
        gecko_contrastive(q[0], p[0])
    with pytest.raises(TypeError, match="query"):
        gecko_contrastive(q.astype(np.int32), p)
