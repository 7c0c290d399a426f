"""Fine-tuning metrics against scikit-learn, scipy, rouge-score and sacrebleu."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as sk

from textgen_jax.finetune import metrics

# Both sides compute a metric in float64 from at most 50 labels or scores: sums of < 100 terms
# and a few products, divisions and roots, each within about 100 roundoffs (2e-14) of exact in
# any order; the metrics are O(1) (BLEU O(100)), so 1e-12 of the value, or absolute. A metric
# that is a ratio of small counts with a dyadic value (0, 0.5, 0.75, 1) is exact: ==.
FLOAT64 = 1e-12


def _approx(value):
    return pytest.approx(value, rel=FLOAT64, abs=FLOAT64)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_label_metrics_match_scikit_learn(rng, num_classes):
    for _ in range(20):
        labels = rng.integers(num_classes, size=50)
        # Mostly right, some random: correlated but imperfect predictions.
        predictions = np.where(rng.random(50) < 0.6, labels, rng.integers(num_classes, size=50))
        assert metrics.accuracy(predictions, labels) == _approx(
            sk.accuracy_score(labels, predictions))
        assert metrics.f1(predictions, labels, average="macro") == _approx(
            sk.f1_score(labels, predictions, average="macro", zero_division=0))
        assert metrics.matthews_correlation(predictions, labels) == _approx(
            sk.matthews_corrcoef(labels, predictions))
        if num_classes == 2:
            assert metrics.f1(predictions, labels) == _approx(
                sk.f1_score(labels, predictions, zero_division=0))


def test_label_metrics_edge_cases():
    labels = np.array([0, 1, 1, 0, 2])
    assert metrics.accuracy(labels, labels) == 1.0
    assert metrics.f1(labels, labels, average="macro") == 1.0
    assert metrics.matthews_correlation(labels, labels) == _approx(1.0)
    # A constant predictor has no correlation (scikit-learn's 0, not NaN).
    constant = np.zeros(5, int)
    assert metrics.matthews_correlation(constant, labels) == sk.matthews_corrcoef(labels, constant)
    assert metrics.matthews_correlation(constant, labels) == 0.0
    # No positive predicted or present: F1 of the positive class is 0 (zero_division=0).
    assert metrics.f1(np.zeros(3, int), np.zeros(3, int)) == 0.0
    assert metrics.matthews_correlation([1, 0, 1, 0], [0, 1, 0, 1]) == _approx(-1.0)
    with pytest.raises(ValueError, match="same length"):
        metrics.accuracy([1, 0], [1, 0, 1])


def test_correlations_match_scipy(rng):
    for _ in range(20):
        labels = rng.uniform(0, 5, size=40)
        predictions = labels + rng.normal(0, 1.5, size=40)
        assert metrics.pearson(predictions, labels) == _approx(
            scipy.stats.pearsonr(predictions, labels).statistic)
        # Rounded scores have ties, which Spearman ranks by their mean rank.
        rounded = np.round(predictions)
        assert metrics.spearman(rounded, np.round(labels)) == _approx(
            scipy.stats.spearmanr(rounded, np.round(labels)).statistic)
    assert metrics.spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == _approx(1.0)
    assert metrics.pearson([1, 1, 1], [1, 2, 3]) == 0.0


def test_squad_normalisation_ignores_case_punctuation_and_articles():
    assert metrics.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert metrics.squad_exact_match("an apple, the pie", ["Apple pie"]) == 1.0
    assert metrics.squad_exact_match("apple", ["pear", "Apple."]) == 1.0  # any gold answer
    assert metrics.squad_exact_match("apples", ["apple"]) == 0.0
    # "the cat sat" vs "a cat sat down": precision 2/2, recall 2/3 -> F1 0.8.
    assert metrics.squad_f1("the cat sat", ["a cat sat down"]) == _approx(0.8)
    assert metrics.squad_f1("the cat sat", ["dog", "a cat sat down"]) == _approx(0.8)
    # Empty answers: equal empties score 1, one empty side 0 (the official script's rule).
    assert metrics.squad_f1("", [""]) == 1.0 and metrics.squad_exact_match("", ["the"]) == 1.0
    assert metrics.squad_f1("", ["cat"]) == 0.0 and metrics.squad_f1("cat", [""]) == 0.0
    scores = metrics.squad_scores(["cat", "dog"], [["the cat"], ["cow"]])
    assert scores == {"exact_match": 0.5, "f1": 0.5}


def test_rouge_scores_stemmed_overlaps():
    assert metrics.rouge(["the cats were running"], ["the cat was running"])["rouge1"] == (
        _approx(1 - 1 / 4))  # cats/cat and running stem alike; were/was do not
    # pred "alpha beta gamma delta", ref "alpha beta omega delta": 3/4 unigrams, 1/3 bigrams
    # (alpha beta), LCS alpha beta delta = 3/4.
    scores = metrics.rouge(["alpha beta gamma delta"], ["alpha beta omega delta"])
    assert scores["rouge1"] == _approx(0.75)
    assert scores["rouge2"] == _approx(1 / 3)
    assert scores["rougeL"] == _approx(0.75)
    both = metrics.rouge(["alpha beta", "x y"], ["alpha beta", "z w"])
    assert both["rouge1"] == _approx(0.5)  # the mean over examples


def test_bleu_extremes_and_corpus_level():
    references = ["the cat sat on the mat today", "a dog ran in the park at noon"]
    assert metrics.bleu(references, references) == _approx(100.0)
    assert metrics.bleu(["zz yy xx ww vv", "qq rr ss tt uu"], references) == _approx(0.0)
    partial = metrics.bleu(["the cat sat on the mat", "a dog ran in the park"], references)
    assert 0.0 < partial < 100.0


def test_compute_metrics_by_name():
    results = metrics.compute_metrics(["accuracy", "matthews"], [1, 0, 1, 1], [1, 0, 0, 1])
    assert results == {"accuracy": 0.75, "matthews": _approx(
        sk.matthews_corrcoef([1, 0, 0, 1], [1, 0, 1, 1]))}
    squad = metrics.compute_metrics(["squad_f1", "exact_match"], ["the cat"], [["cat"]])
    assert squad == {"squad_f1": 1.0, "exact_match": 1.0}
    with pytest.raises(ValueError, match="Unknown metrics.*'accuracy'"):
        metrics.compute_metrics(["acuracy"], [1], [1])


def test_entity_f1_matches_seqeval(rng):
    from seqeval.metrics import f1_score  # conlleval's reading of IOB tags

    tags = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
    for _ in range(30):
        references = [[tags[t] for t in rng.integers(len(tags), size=rng.integers(1, 12))]
                      for _ in range(8)]
        # Keep about 70% of the tags: some entities right, some cut, merged or retyped.
        predictions = [[t if rng.random() < 0.7 else tags[rng.integers(len(tags))] for t in s]
                       for s in references]
        assert metrics.entity_f1(predictions, references) == _approx(
            f1_score(references, predictions))
    sentence = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC"]  # I- may open an entity
    assert metrics.entity_spans(sentence) == {("PER", 0, 1), ("LOC", 3, 4), ("LOC", 5, 5)}
    assert metrics.entity_f1([sentence], [sentence]) == 1.0
    assert metrics.entity_f1([["O", "O"]], [["O", "O"]]) == 0.0  # no entities at all
