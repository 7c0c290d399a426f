"""The fine-tuning tasks by name: which dataset, which features, what the head predicts and
how it is scored. `get_task(config.task.name)` is what the pipelines, heads and evaluation read.

Kinds (what the head predicts from the features in `Task.inputs`):
  classification   one text or a pair -> one of num_labels classes ('label' feature).
  regression       one text or a pair -> a float score (num_labels == 1).
  similarity       a pair whose order carries no meaning -> a class, or a float score when
                   num_labels == 1 (STS-B); GPT reads it in both orders (GPT §3.3).
  multiple_choice  a context and num_labels candidate answers -> the index of the right one.
  token_classification  a sequence of words -> one of num_labels tags per word (NER).
  extractive_qa    a question and a context -> the answer's span in the context (SQuAD).
  seq2seq          a source text -> the target text in the feature `Task.target`.

Embedded-corpus tasks (no download) read the stdlib docstrings (data/corpus.py): their
examples are built from the corpus by data in the pipelines (finetune/pipelines.py).
"""

from __future__ import annotations

import copy
import dataclasses
import re

import ml_collections

KINDS = ("classification", "regression", "similarity", "multiple_choice",
         "token_classification", "extractive_qa", "seq2seq")


@dataclasses.dataclass(frozen=True)
class Task:
    """One fine-tuning task.

    inputs: the text features read, in order (a pair for entailment and similarity; the
      question then the context for QA; the source for seq2seq).
    target: the label feature (classification, regression, similarity; one tag per word for
      token_classification), the answers feature (extractive_qa, SQuAD's {'text',
      'answer_start'}) or the target text (seq2seq).
    num_labels: classes (tags for token_classification); 1 for a float score; candidate
      answers for multiple_choice; 0 for QA and seq2seq.
    metrics: names from finetune.metrics.METRICS; the first is the one to keep the best
      checkpoint by.
    splits: the dataset's splits; train_split and eval_split are the defaults fine-tuning uses.
    languages: a multilingual task's languages: XNLI's (the one read is config.task.language,
      '' = the first), a translation's (source, target).
    label_names: the classes' names where a metric reads them (token_classification's IOB
      tags for entity_f1).
    """

    name: str
    kind: str
    dataset: str
    inputs: tuple[str, ...]
    target: str
    num_labels: int
    metrics: tuple[str, ...]
    splits: tuple[str, ...] = ("train", "validation")
    train_split: str = "train"
    eval_split: str = "validation"
    languages: tuple[str, ...] = ()
    label_names: tuple[str, ...] = ()
    # extractive_qa: some questions have no answer in their context (SQuAD v2.0); '' is then a
    # prediction (config.task.null_score_diff_threshold) and the gold answer of such a one.
    has_unanswerable: bool = False
    # Splits read from another dataset than `dataset`: (split, dataset) pairs (zero-shot XNLI
    # trains on multi_nli and evaluates on xnli's splits).
    split_datasets: tuple[tuple[str, str], ...] = ()

    @property
    def is_regression(self) -> bool:
        return self.kind in ("regression", "similarity") and self.num_labels == 1

    @property
    def both_orders(self) -> bool:
        """Whether GPT reads the pair in both orders (GPT §3.3, similarity)."""
        return self.kind == "similarity"

    def dataset_for(self, split: str) -> str:
        """The TFDS dataset `split` (a split string, as check_split's) is read from."""
        datasets = {dict(self.split_datasets).get(part.split("[")[0].strip(), self.dataset)
                    for part in split.split("+")}
        if len(datasets) > 1:
            raise ValueError(f"Split {split!r} of task {self.name!r} mixes the datasets "
                             f"{sorted(datasets)}; read one at a time.")
        return datasets.pop()

    def check_split(self, split: str) -> None:
        """Raises naming the available splits when a base split of `split` (a TFDS split
        string such as 'train[:10%]+validation') is not one of the task's."""
        for part in split.split("+"):
            base = part.split("[")[0].strip()
            if base not in self.splits:
                raise ValueError(f"Task {self.name!r} has no split {base!r}; available splits: "
                                 f"{list(self.splits)}. Set config.data.train_split / "
                                 "eval_split.")


_GLUE_SPLITS = ("train", "validation", "test")


def _glue(config: str, kind: str, inputs: tuple[str, ...], num_labels: int,
          metrics: tuple[str, ...], **kwargs) -> Task:
    return Task(f"glue/{config}", kind, f"glue/{config}", inputs, "label", num_labels, metrics,
                splits=kwargs.pop("splits", _GLUE_SPLITS), **kwargs)


_MNLI_SPLITS = ("train", "validation_matched", "validation_mismatched", "test_matched",
                "test_mismatched")
# English first: the language XNLI reads unless config.task.language names another.
XNLI_LANGUAGES = ("en", "ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur",
                  "vi", "zh")

_TASKS = [
    _glue("sst2", "classification", ("sentence",), 2, ("accuracy",)),
    _glue("cola", "classification", ("sentence",), 2, ("matthews", "accuracy")),
    _glue("mnli", "classification", ("premise", "hypothesis"), 3, ("accuracy",),
          splits=_MNLI_SPLITS, eval_split="validation_matched"),
    _glue("qnli", "classification", ("question", "sentence"), 2, ("accuracy",)),
    _glue("rte", "classification", ("sentence1", "sentence2"), 2, ("accuracy",)),
    _glue("qqp", "similarity", ("question1", "question2"), 2, ("accuracy", "f1")),
    _glue("mrpc", "similarity", ("sentence1", "sentence2"), 2, ("accuracy", "f1")),
    _glue("stsb", "similarity", ("sentence1", "sentence2"), 1, ("pearson", "spearman")),
    # Scored as CoNLL's entity F1 over the tags of label_names (the dataset's ClassLabel).
    Task("conll2003", "token_classification", "conll2003", ("tokens",), "ner", 9,
         ("entity_f1",), splits=("train", "dev", "test"), eval_split="dev",
         label_names=("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC",
                      "I-MISC")),
    Task("squad", "extractive_qa", "squad/v1.1", ("question", "context"), "answers", 0,
         ("exact_match", "squad_f1")),
    Task("squad_v2", "extractive_qa", "squad/v2.0", ("question", "context"), "answers", 0,
         ("exact_match", "squad_f1"), has_unanswerable=True),
    Task("cnn_dailymail", "seq2seq", "cnn_dailymail", ("article",), "highlights", 0,
         ("rouge1", "rouge2", "rougeL"), splits=("train", "validation", "test")),
    Task("xsum", "seq2seq", "xsum", ("document",), "summary", 0,
         ("rouge1", "rouge2", "rougeL"), splits=("train", "validation", "test")),
    Task("wmt14_translate/de-en", "seq2seq", "wmt14_translate/de-en", ("de",), "en", 0,
         ("bleu",), splits=("train", "validation", "test"), languages=("de", "en")),
    # XNLI has no training split of its own: "xnli" fine-tunes on its validation split in
    # config.task.language and reports the test accuracy in each of config.task.eval_languages
    # too (accuracy_<lang>); "xnli_zero_shot" below is the paper's protocol.
    Task("xnli", "classification", "xnli", ("premise", "hypothesis"), "label", 3, ("accuracy",),
         splits=("validation", "test"), train_split="validation", eval_split="test",
         languages=XNLI_LANGUAGES),
    # XLM §5.2's protocol, zero-shot transfer: fine-tune on MNLI's English training set
    # (multi_nli; its labels are XNLI's: entailment, neutral, contradiction) and evaluate on
    # XNLI's test split in config.task.language and each of config.task.eval_languages.
    Task("xnli_zero_shot", "classification", "multi_nli", ("premise", "hypothesis"), "label", 3,
         ("accuracy",), splits=("train", "validation_matched", "validation_mismatched",
                                "validation", "test"),
         train_split="train", eval_split="test", languages=XNLI_LANGUAGES,
         split_datasets=(("validation", "xnli"), ("test", "xnli"))),
    # The embedded corpus.
    Task("docstring_kind", "classification", "stdlib_docstrings/kinds", ("text",), "label", 3,
         ("macro_f1", "accuracy")),  # ~80% of docstrings are functions: macro F1 first
    Task("docstring_choice", "multiple_choice", "stdlib_docstrings/pairs", ("code",),
         "docstring", 4, ("accuracy",)),
    Task("docstring_similarity", "similarity", "stdlib_docstrings/kinds", ("text", "text"),
         "module", 2, ("accuracy", "f1")),
    # XLM reads code and docstrings as two languages, as its tiny preset's ("en", "code").
    Task("code_to_docstring", "seq2seq", "stdlib_docstrings/pairs", ("code",), "docstring", 0,
         ("rouge1", "rouge2", "rougeL", "bleu"), languages=("code", "en")),
]
TASKS: dict[str, Task] = {task.name: task for task in _TASKS}


def get_task(name: str) -> Task:
    """The registered task `name` (config.task.name); raises listing the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"Unknown fine-tuning task config.task.name={name!r}; known tasks: "
                         f"{sorted(TASKS)}.") from None


def in_language(config: ml_collections.ConfigDict, language: str
                ) -> ml_collections.ConfigDict:
    """A copy of `config` that reads its multilingual classification task (XNLI) in `language`
    (config.task.language) and evaluates no other: how evaluation scores each of
    config.task.eval_languages. ValueError for a task that has no such language."""
    task = get_task(config.task.name)
    if task.kind == "seq2seq" or not task.languages:
        raise ValueError(f"config.task.eval_languages={tuple(config.task.eval_languages)}: "
                         f"task {task.name!r} is not a multilingual classification task "
                         "(xnli), which cross-lingual evaluation needs; set it to ().")
    if language not in task.languages:
        raise ValueError(f"config.task.eval_languages names {language!r}, not a language of "
                         f"task {task.name!r}; use some of {list(task.languages)}.")
    config = copy.deepcopy(config)
    config.task.language = language
    config.task.eval_languages = ()
    return config


def signature_of(code: str) -> str:
    """The `def` line(s) of a function's source, decorators dropped: the context of the
    docstring_choice task ("which docstring belongs to this signature?")."""
    match = re.search(r"^(async\s+)?def\s.*?\)(\s*->[^:]*)?\s*:", code, re.MULTILINE | re.DOTALL)
    return match.group(0) if match else code.splitlines()[0]
