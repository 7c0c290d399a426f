"""SQuAD's windows and answer decoding against BERT's reference (google-research/bert
run_squad.py: the doc_spans loop of convert_examples_to_features, _check_is_max_context,
_get_best_indexes and write_predictions), re-typed below as the oracle and run on the same
inputs and random logits."""

from __future__ import annotations

import collections
import re

import numpy as np
import pytest

from textgen_jax.finetune.answers import Window, best_answer
from textgen_jax.finetune.pipelines import doc_windows, is_max_context

# ---- the reference ---------------------------------------------------------------------------

_DocSpan = collections.namedtuple("DocSpan", ["start", "length"])


def _reference_doc_spans(num_tokens, max_tokens_for_doc, doc_stride):
    doc_spans, start_offset = [], 0
    while start_offset < num_tokens:
        length = num_tokens - start_offset
        if length > max_tokens_for_doc:
            length = max_tokens_for_doc
        doc_spans.append(_DocSpan(start=start_offset, length=length))
        if start_offset + length == num_tokens:
            break
        start_offset += min(length, doc_stride)
    return doc_spans


def _reference_check_is_max_context(doc_spans, cur_span_index, position):
    best_score, best_span_index = None, None
    for (span_index, doc_span) in enumerate(doc_spans):
        end = doc_span.start + doc_span.length - 1
        if position < doc_span.start or position > end:
            continue
        num_left_context = position - doc_span.start
        num_right_context = end - position
        score = min(num_left_context, num_right_context) + 0.01 * doc_span.length
        if best_score is None or score > best_score:
            best_score, best_span_index = score, span_index
    return cur_span_index == best_span_index


def _reference_get_best_indexes(logits, n_best_size):
    index_and_score = sorted(enumerate(logits), key=lambda x: x[1], reverse=True)
    return [index for index, _ in index_and_score[:n_best_size]]


_Prelim = collections.namedtuple(
    "PrelimPrediction", ["feature_index", "start_index", "end_index", "start_logit", "end_logit"])


def _reference_prediction(features, results, context, n_best_size, max_answer_length,
                          version_2_with_negative, null_score_diff_threshold):
    """write_predictions for one example; a feature is (tokens_length, token_to_orig_map:
    {row position: character span}, token_is_max_context), a result (start, end logits)."""
    prelim, score_null = [], 1000000
    null_start_logit = null_end_logit = 0
    min_null_feature_index = 0
    for feature_index, ((length, token_map, max_context), (starts, ends)) in enumerate(
            zip(features, results)):
        starts, ends = [float(x) for x in starts], [float(x) for x in ends]
        if version_2_with_negative:
            feature_null_score = starts[0] + ends[0]
            if feature_null_score < score_null:
                score_null = feature_null_score
                min_null_feature_index = feature_index
                null_start_logit, null_end_logit = starts[0], ends[0]
        for start_index in _reference_get_best_indexes(starts, n_best_size):
            for end_index in _reference_get_best_indexes(ends, n_best_size):
                if start_index >= length or end_index >= length:
                    continue
                if start_index not in token_map or end_index not in token_map:
                    continue
                if not max_context.get(start_index, False):
                    continue
                if end_index < start_index:
                    continue
                if end_index - start_index + 1 > max_answer_length:
                    continue
                prelim.append(_Prelim(feature_index, start_index, end_index,
                                      starts[start_index], ends[end_index]))
    if version_2_with_negative:
        prelim.append(_Prelim(min_null_feature_index, 0, 0, null_start_logit, null_end_logit))
    prelim = sorted(prelim, key=lambda x: x.start_logit + x.end_logit, reverse=True)
    seen, nbest = set(), []
    for pred in prelim:
        if len(nbest) >= n_best_size:
            break
        if pred.start_index > 0:
            token_map = features[pred.feature_index][1]
            text = context[token_map[pred.start_index][0]:token_map[pred.end_index][1]]
            if text in seen:
                continue
        else:
            text = ""
        seen.add(text)
        nbest.append((text, pred.start_logit, pred.end_logit))
    if version_2_with_negative and "" not in seen:
        nbest.append(("", null_start_logit, null_end_logit))
    if not nbest:
        nbest.append(("empty", 0.0, 0.0))
    if not version_2_with_negative:
        return nbest[0][0]
    best_non_null = next(entry for entry in nbest if entry[0])
    score_diff = score_null - best_non_null[1] - best_non_null[2]
    return "" if score_diff > null_score_diff_threshold else best_non_null[0]


# ---- the same inputs on both sides ------------------------------------------------------------

@pytest.mark.parametrize("num_tokens", [0, 1, 7, 20, 21, 64, 100])
@pytest.mark.parametrize("room,stride", [(20, 8), (20, 20), (20, 30), (5, 1), (13, 4)])
def test_windows_and_max_context_equal_the_reference(num_tokens, room, stride):
    ours = doc_windows(num_tokens, room, stride)
    theirs = _reference_doc_spans(num_tokens, room, stride)
    assert ours == ([(s.start, s.length) for s in theirs] or [(0, 0)])
    for window in range(len(theirs)):
        for token in range(num_tokens):
            assert is_max_context(ours, window, token) == _reference_check_is_max_context(
                theirs, window, token), (window, token)


def _windowed(context: str, room: int, stride: int, prefix: int):
    """Rows of a context read in windows: `prefix` question positions, then the window's
    words (a token per word), then padding to seq_len."""
    spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", context)]
    windows = doc_windows(len(spans), room, stride)
    seq_len = prefix + room + 3
    features, rows = [], []
    for w, (first, length) in enumerate(windows):
        offsets = np.full((seq_len, 2), -1, np.int32)
        max_context = np.zeros(seq_len, np.int32)
        token_map, is_max = {}, {}
        for t in range(length):
            position = prefix + t
            offsets[position] = spans[first + t]
            max_context[position] = is_max_context(windows, w, first + t)
            token_map[position] = spans[first + t]
            is_max[position] = bool(max_context[position])
        features.append((prefix + length + 1, token_map, is_max))
        rows.append((offsets, max_context))
    return features, rows


@pytest.mark.parametrize("seed", range(6))
def test_best_answer_equals_the_reference_on_random_logits(seed):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(int(rng.integers(15, 60)))]
    context = " ".join(words)
    room, stride, prefix = int(rng.integers(6, 16)), int(rng.integers(2, 8)), 4
    features, rows = _windowed(context, room, stride, prefix)
    assert len(rows) > 1 or len(words) <= room
    for trial in range(20):
        # Coarse logits (multiples of 0.25) make ties, whose order must agree too.
        results = [(rng.integers(-8, 8, len(offsets)).astype(np.float32) / 4,
                    rng.integers(-8, 8, len(offsets)).astype(np.float32) / 4)
                   for offsets, _ in rows]
        windows = [Window(starts, ends, offsets, max_context)
                   for (starts, ends), (offsets, max_context) in zip(results, rows)]
        n_best, max_answer_length = int(rng.integers(1, 12)), int(rng.integers(1, 8))
        ours = best_answer(windows, context, max_answer_length, n_best)
        theirs = _reference_prediction(features, results, context, n_best, max_answer_length,
                                       False, 0.0)
        assert ours == ("" if theirs == "empty" else theirs), trial
        if ours:  # v2.0: a span exists to weigh the null answer against
            for threshold in (-2.0, -0.5, 0.0, 0.5, 2.0):
                assert best_answer(windows, context, max_answer_length, n_best,
                                   null_score_diff_threshold=threshold) == _reference_prediction(
                    features, results, context, n_best, max_answer_length, True, threshold)


def test_an_answer_starts_only_where_its_window_has_max_context():
    """Two windows share the middle tokens: a span starting there is decoded from the window
    that sees it with more context, however high the other window scores it."""
    context = " ".join(f"w{i}" for i in range(12))
    features, rows = _windowed(context, room=8, stride=4, prefix=2)
    assert len(rows) == 2  # tokens 0-7 and 4-11
    (offsets0, max0), (offsets1, max1) = rows
    # Token 5 of the context: position 2 + 5 in window 0 (1 token of context to its right...)
    # and 2 + 1 in window 1; window 0 has min(5, 2) = 2, window 1 min(1, 6) = 1: window 0's.
    assert max0[2 + 5] == 1 and max1[2 + 1] == 0
    low, high = np.full(len(offsets0), -9.0), np.full(len(offsets1), -9.0)
    starts1, ends1 = high.copy(), high.copy()
    starts1[2 + 1], ends1[2 + 1] = 9.0, 9.0  # window 1 loves "w5" alone
    starts0, ends0 = low.copy(), low.copy()
    starts0[2 + 5], ends0[2 + 5] = 1.0, 1.0  # window 0 mildly
    windows = [Window(starts0, ends0, offsets0, max0), Window(starts1, ends1, offsets1, max1)]
    assert best_answer(windows, context) == "w5"
    # Without window 0's vote, the span may not start in window 1 at all: '' (no span).
    assert best_answer(windows[1:], context, n_best=1) == ""
