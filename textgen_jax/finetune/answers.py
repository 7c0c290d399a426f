"""Answer-span decoding of extractive QA (SQuAD, BERT §4.2): the start and end logits of an
example's windows back to the answer's text in its context, through the rows' context_offsets
and max_context (finetune/pipelines.py), as BERT's run_squad.py `write_predictions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class Window(NamedTuple):
    """One row's outputs: start_logits, end_logits [L]; context_offsets [L, 2] (-1 off the
    context); max_context [L] (1 where this window may start an answer)."""

    start_logits: np.ndarray
    end_logits: np.ndarray
    context_offsets: np.ndarray
    max_context: np.ndarray


def best_answer(windows: Sequence[Window], context: str, max_answer_length: int = 30,
                n_best: int = 20, null_score_diff_threshold: float | None = None) -> str:
    """The answer text of one question read in `windows`: the span with the highest start +
    end logit among each window's n_best best starts and n_best best ends, both in the context,
    starting where the window has max context, end >= start and at most max_answer_length
    tokens long; '' when no span qualifies. Ties go to the earlier window, start, then end.

    `null_score_diff_threshold` (SQuAD v2.0; None for v1.1): '' also when the null score (the
    lowest start + end logit of position 0 over the windows) exceeds the best span's score by
    more than it.
    """
    best, best_score, null_score = None, -np.inf, np.inf
    for window in windows:
        # Scores in float64, as the reference's Python floats: float32 sums could reorder ties.
        start_logits = np.asarray(window.start_logits, np.float64)
        end_logits = np.asarray(window.end_logits, np.float64)
        offsets = np.asarray(window.context_offsets)
        null_score = min(null_score, float(start_logits[0] + end_logits[0]))
        in_context = offsets[:, 0] >= 0
        may_start = in_context & (np.asarray(window.max_context) > 0)
        for start in np.argsort(-start_logits, kind="stable")[:n_best]:
            for end in np.argsort(-end_logits, kind="stable")[:n_best]:
                score = float(start_logits[start] + end_logits[end])
                if (may_start[start] and in_context[end]
                        and start <= end < start + max_answer_length and score > best_score):
                    best, best_score = (offsets[start][0], offsets[end][1]), score
    if best is None:
        return ""
    if null_score_diff_threshold is not None and (
            null_score - best_score > null_score_diff_threshold):
        return ""
    return context[best[0]:best[1]]


def best_answer_span(start_logits: np.ndarray, end_logits: np.ndarray,
                     context_offsets: np.ndarray, context: str, max_answer_length: int = 30,
                     n_best: int = 20) -> str:
    """`best_answer` of a context read in one window (every context token may start)."""
    offsets = np.asarray(context_offsets)
    return best_answer([Window(start_logits, end_logits, offsets, offsets[:, 0] >= 0)],
                       context, max_answer_length, n_best)
