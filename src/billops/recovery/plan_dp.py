"""The planner's dynamic programme: which candidate blocks get a retry, in money.

State: the retry number k and the block of the previous pick (for the first retry, the failure itself).
A retry at block j after a pick at block i has the chance q = p_k(j) · g(hours between them), p_k the
retry model's probability for attempt k at j and g the learned spacing factor (recovery/spacing.py;
1 for the first retry of a first plan, whose gap the retry model already knows). Its value is the
expected recovery q · amount · d_j (d: a small preference for earlier recoveries) minus the attempt
cost, plus (1 − q) times the best value of the retries after it. A retry is taken only while
q · amount · d_j beats the cost, each pick at least `gap` blocks after the one before (the minimum
spacing). Backwards over k, each step an (m, blocks + 1, blocks) array: with 32 blocks and 8 retries a
few million numbers per thousand failures.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from billops.recovery.spacing import spacing_factor

P_CAP = 0.99  # a spaced-out retry never becomes a certainty


def choose_retries(
    prob: np.ndarray,
    valid: np.ndarray,
    block_hours: np.ndarray,
    hours_in: np.ndarray,
    *,
    amount: np.ndarray,
    cost: np.ndarray,
    discount: np.ndarray,
    gap: np.ndarray,
    min_p: float,
    spacing: dict[str, Any] | None,
    categories: np.ndarray,
    replan: np.ndarray,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per retry k: the failures (row indices) that get one, their blocks and their chances q.

    prob (m, K, T): p_k at each block; valid (m, T); block_hours (m, T): hours from the window's start;
    hours_in (m,): hours from the last failure to the window's start; amount, cost (m,); discount
    (m, T); gap (m,): blocks between two picks; replan (m,): the last failure was already a retry (the
    first pick's gap to it gets the spacing factor too)."""
    m, k_max, t_max = prob.shape
    # Spacing factors: rows 0..T-1 = the previous pick's block, row T = the last failure.
    dh = block_hours[:, None, :] - block_hours[:, :, None]  # (m, prev, next)
    g = spacing_factor(spacing, categories, dh.reshape(m, -1)).reshape(m, t_max, t_max)
    g0 = spacing_factor(spacing, categories, block_hours + hours_in[:, None])
    g0 = np.where(replan[:, None], g0, 1.0)
    g_all = np.concatenate([g, g0[:, None, :]], axis=1).astype(np.float32)  # (m, T + 1, T)
    cols = np.arange(t_max)
    allowed = cols[None, None, :] >= (cols[None, :, None] + gap[:, None, None])  # (m, T, T)
    allowed = np.concatenate([allowed, np.ones((m, 1, t_max), dtype=bool)], axis=1) & valid[:, None, :]
    gain = (amount[:, None] * discount).astype(np.float32)[:, None, :]  # (m, 1, T)
    c = cost.astype(np.float32)[:, None, None]
    w_next = np.zeros((m, t_max), dtype=np.float32)  # best value after a pick at block j, retry k + 1
    args = np.zeros((k_max, m, t_max + 1), dtype=np.int64)
    worth = np.zeros((k_max, m, t_max + 1), dtype=np.float32)
    chance = np.zeros((k_max, m, t_max + 1), dtype=np.float32)  # q of the best pick per previous pick
    for k in range(k_max - 1, -1, -1):
        q = np.minimum(prob[:, k, :].astype(np.float32)[:, None, :] * g_all, P_CAP)
        ok = allowed & (q >= min_p) & (q * gain > c)
        val = np.where(ok, q * gain - c + (1 - q) * w_next[:, None, :], -1.0)
        a = val.argmax(axis=2)
        best = np.take_along_axis(val, a[:, :, None], axis=2)[:, :, 0]
        args[k], worth[k] = a, best
        chance[k] = np.take_along_axis(q, a[:, :, None], axis=2)[:, :, 0]
        w_next = np.maximum(best[:, :t_max], 0.0)
    prev = np.full(m, t_max, dtype=np.int64)  # the last failure
    alive = np.ones(m, dtype=bool)
    rows = np.arange(m)
    pick_i, pick_j, pick_q = [], [], []
    for k in range(k_max):
        alive &= worth[k][rows, prev] > 0
        idx = np.nonzero(alive)[0]
        j = args[k][idx, prev[idx]]
        pick_i.append(idx)
        pick_j.append(j)
        pick_q.append(chance[k][idx, prev[idx]].astype(np.float64))
        prev[idx] = j
    return pick_i, pick_j, pick_q
