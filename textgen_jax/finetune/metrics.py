"""Fine-tuning metrics: pure numpy/python functions of predictions and references.

Classification metrics take integer arrays [num_examples]; correlations take float arrays;
SQuAD metrics take answer strings; ROUGE and BLEU take lists of strings and call the reference
implementations (rouge-score, sacrebleu: the `finetune` extra). Every score is a float, in
[0, 1] except BLEU, which is on sacrebleu's 0-100 scale.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Callable, Sequence

import numpy as np


def _as_labels(predictions: Sequence[int], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 1:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} must be "
                         "1-D arrays of the same length.")
    if not labels.size:
        raise ValueError("No examples to score: predictions and labels are empty.")
    return predictions, labels


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """The fraction of predictions equal to their label; [num_examples] each."""
    predictions, labels = _as_labels(predictions, labels)
    return float(np.mean(predictions == labels))


def _f1_of_class(predictions: np.ndarray, labels: np.ndarray, positive: int) -> float:
    true_positives = np.sum((predictions == positive) & (labels == positive))
    predicted, actual = np.sum(predictions == positive), np.sum(labels == positive)
    if predicted + actual == 0:
        return 0.0  # as scikit-learn's zero_division=0
    return float(2 * true_positives / (predicted + actual))


def f1(predictions: Sequence[int], labels: Sequence[int], average: str = "binary",
       positive_label: int = 1) -> float:
    """F1 of class `positive_label` ('binary', GLUE's MRPC/QQP F1) or the unweighted mean of
    the per-class F1 over the classes in predictions or labels ('macro'). A class never
    predicted and never present scores 0 (scikit-learn's zero_division=0)."""
    predictions, labels = _as_labels(predictions, labels)
    if average == "binary":
        return _f1_of_class(predictions, labels, positive_label)
    if average == "macro":
        classes = np.union1d(predictions, labels)
        return float(np.mean([_f1_of_class(predictions, labels, c) for c in classes]))
    raise ValueError(f"average={average!r}: use 'binary' or 'macro'.")


def matthews_correlation(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation coefficient (GLUE's CoLA metric), multiclass form (Gorodkin 2004);
    0 when either side is constant."""
    predictions, labels = _as_labels(predictions, labels)
    classes, encoded = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    true, pred = encoded[:labels.size], encoded[labels.size:]
    confusion = np.zeros((classes.size, classes.size), np.float64)
    np.add.at(confusion, (true, pred), 1)
    t, p = confusion.sum(axis=1), confusion.sum(axis=0)
    correct, total = np.trace(confusion), confusion.sum()
    denominator = np.sqrt((total ** 2 - p @ p) * (total ** 2 - t @ t))
    return float((correct * total - t @ p) / denominator) if denominator else 0.0


def _as_scores(predictions: Sequence[float], labels: Sequence[float]):
    predictions = np.asarray(predictions, np.float64)
    labels = np.asarray(labels, np.float64)
    if predictions.shape != labels.shape or predictions.ndim != 1 or labels.size < 2:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} must be "
                         "1-D arrays of the same length, at least 2.")
    return predictions, labels


def pearson(predictions: Sequence[float], labels: Sequence[float]) -> float:
    """Pearson correlation (STS-B); 0 when either side is constant."""
    x, y = _as_scores(predictions, labels)
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / denominator) if denominator else 0.0


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size, np.float64)
    ranks[order] = np.arange(1, values.size + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(predictions: Sequence[float], labels: Sequence[float]) -> float:
    """Spearman rank correlation (STS-B): Pearson of the tie-averaged ranks."""
    x, y = _as_scores(predictions, labels)
    return pearson(_average_ranks(x), _average_ranks(y))


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, first, last) of the entities in one IOB/IOB2 tag sequence ('B-PER', 'I-PER',
    'O', ...), read as CoNLL's conlleval does: an entity starts at B-x, or at I-x that does not
    continue an entity of type x, and ends before O, B-, or a change of type."""
    spans, start, kind = set(), None, ""
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, tag_type = tag.partition("-")
        if start is not None and (prefix in ("B", "O") or tag_type != kind):
            spans.add((kind, start, i - 1))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = i, tag_type
    return spans


def entity_f1(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]
              ) -> float:
    """CoNLL-2003's NER score: micro F1 over entities (type and exact extent) of all
    sentences, each a sequence of IOB tags; 0 when nothing is predicted or present."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"{len(predictions)} predicted tag sequences for {len(references)} "
                         "references.")
    predicted = true = correct = 0
    for sentence_predictions, sentence_references in zip(predictions, references):
        if len(sentence_predictions) != len(sentence_references):
            raise ValueError(f"{len(sentence_predictions)} predicted tags for "
                             f"{len(sentence_references)} words.")
        guessed, gold = entity_spans(sentence_predictions), entity_spans(sentence_references)
        predicted, true, correct = predicted + len(guessed), true + len(gold), correct + len(
            guessed & gold)
    return 2 * correct / (predicted + true) if predicted + true else 0.0


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's official answer normalisation: lower case, punctuation and the articles
    a/an/the removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer, else 0.0."""
    return float(max(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def _token_f1(prediction: str, answer: str) -> float:
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    common = sum((collections.Counter(predicted) & collections.Counter(gold)).values())
    if not predicted or not gold:
        return float(predicted == gold)  # both empty: 1; one empty: 0
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_f1(prediction: str, answers: Sequence[str]) -> float:
    """The best bag-of-tokens F1 of the normalised prediction against any gold answer."""
    return max(_token_f1(prediction, a) for a in answers)


def squad_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """{'exact_match', 'f1'}: the means over questions, each with its list of gold answers
    (the official evaluate-v1.1 script's figures, as fractions)."""
    if len(predictions) != len(answers) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answer lists: "
                         "need one non-empty list per prediction.")
    return {"exact_match": float(np.mean([squad_exact_match(p, a)
                                          for p, a in zip(predictions, answers)])),
            "f1": float(np.mean([squad_f1(p, a) for p, a in zip(predictions, answers)]))}


def rouge(predictions: Sequence[str], references: Sequence[str],
          rouge_types: Sequence[str] = ("rouge1", "rouge2", "rougeL")) -> dict[str, float]:
    """Mean F-measures of rouge-score (Google's reimplementation of ROUGE-1.5.5, with the
    Porter stemmer, as BART's summarization figures), e.g. {'rouge1', 'rouge2', 'rougeL'}."""
    from rouge_score import rouge_scorer  # the finetune extra
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references.")
    scorer = rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=True)
    scores = [scorer.score(r, p) for p, r in zip(predictions, references)]
    return {t: float(np.mean([s[t].fmeasure for s in scores])) for t in rouge_types}


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU of sacrebleu with its default 13a tokenisation (0-100), one reference
    per prediction."""
    import sacrebleu  # the finetune extra
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references.")
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def _macro_f1(predictions: Sequence[int], labels: Sequence[int]) -> float:
    return f1(predictions, labels, average="macro")


_LABEL_METRICS: dict[str, Callable[..., float]] = {
    "accuracy": accuracy, "f1": f1, "macro_f1": _macro_f1, "matthews": matthews_correlation,
    "pearson": pearson, "spearman": spearman,
}
TEXT_METRICS = ("entity_f1", "exact_match", "squad_f1", "rouge1", "rouge2", "rougeL", "bleu")
METRICS = (*_LABEL_METRICS, *TEXT_METRICS)  # every name a Task may list; higher is better


def compute_metrics(names: Sequence[str], predictions: Sequence, references: Sequence
                    ) -> dict[str, float]:
    """{name: score} for the metric `names` (from METRICS) of one evaluation.

    Label metrics take predicted and true labels (ints, or floats for pearson/spearman);
    entity_f1 takes predicted and true IOB tag sequences, one per sentence;
    exact_match and squad_f1 take answer strings and, per prediction, a list of gold answers;
    ROUGE and BLEU take predicted and reference strings.
    """
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"Unknown metrics {unknown}; known: {list(METRICS)}.")
    results = {n: _LABEL_METRICS[n](predictions, references)
               for n in names if n in _LABEL_METRICS}
    if {"exact_match", "squad_f1"} & set(names):
        squad = squad_scores(predictions, references)
        results.update({n: squad[{"squad_f1": "f1"}.get(n, n)]
                        for n in ("exact_match", "squad_f1") if n in names})
    rouge_types = [n for n in names if n.startswith("rouge")]
    if rouge_types:
        results.update(rouge(predictions, references, rouge_types))
    if "entity_f1" in names:
        results["entity_f1"] = entity_f1(predictions, references)
    if "bleu" in names:
        results["bleu"] = bleu(predictions, references)
    return {n: results[n] for n in names}
