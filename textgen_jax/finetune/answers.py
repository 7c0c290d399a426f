"""Answer-span decoding of extractive QA (SQuAD, BERT §4.2): a row's start and end logits back
to the answer's text in the example's context, through the rows' context_offsets
(finetune/pipelines.py).
"""

from __future__ import annotations

import numpy as np


def best_answer_span(start_logits: np.ndarray, end_logits: np.ndarray,
                     context_offsets: np.ndarray, context: str, max_answer_length: int = 30,
                     n_best: int = 20) -> str:
    """The answer text of one QA row: the span with the highest start + end logit among the
    n_best best starts and n_best best ends that lie in the context, end >= start and at most
    max_answer_length tokens long (BERT's SQuAD decoding); '' when no span qualifies.

    start_logits, end_logits [L]; context_offsets [L, 2] (the row's, -1 off the context);
    context the example's, `task_source(config, split)[example_index]['context']`.
    """
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    in_context = np.asarray(context_offsets)[:, 0] >= 0
    best_starts = np.argsort(-start_logits, kind="stable")[:n_best]
    best_ends = np.argsort(-end_logits, kind="stable")[:n_best]
    best, best_score = None, -np.inf
    for start in best_starts:
        for end in best_ends:
            if (in_context[start] and in_context[end] and start <= end < start + max_answer_length
                    and start_logits[start] + end_logits[end] > best_score):
                best, best_score = (start, end), start_logits[start] + end_logits[end]
    if best is None:
        return ""
    return context[context_offsets[best[0]][0]:context_offsets[best[1]][1]]
