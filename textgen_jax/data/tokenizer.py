"""Sentencepiece tokenizers trained by the stack and saved in the workdir (through
etils.epath, so a workdir may be a gs:// URI).

Fixed ids: pad 0, unk 1, bos 2, eos 3, then the user-defined symbols in this order: '<mask>',
'<sep>', '<cls>', a newline piece, one '<lang:xx>' per configured language. They are
user-defined (not control) symbols because sentencepiece only recognises user-defined symbols
inside text, so '<mask>' typed in a prompt becomes the mask id.

Normalisation is the identity and whitespace is kept, so code and indentation round-trip
(`decode(encode(text)) == text`); byte fallback maps any character outside the vocabulary to
its UTF-8 bytes, so nothing is unknown.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterable, Iterator, Sequence

import ml_collections
import sentencepiece as spm
from etils import epath

from textgen_jax.config import DEFAULT_SPECIAL_SYMBOLS

TOKENIZER_FILENAME = "tokenizer.model"
NEWLINE = "\n"
# Training threads are fixed rather than taken from the machine: unigram EM sums per-thread
# partial counts, so the learned vocabulary depends on the thread count.
_TRAINER_THREADS = 4
# Sentencepiece drops training sentences longer than this many bytes, so lines are cut to it.
_MAX_SENTENCE_BYTES = 4096


# A role the tokenizer lacks (sentencepiece's id of a disabled piece). Imported tokenizers may
# lack pad, bos or eos (GPT-1's has only <unk>); each missing role has one documented stand-in:
MISSING_ROLES = {
    "pad": "rows are padded with the unknown token's id (padding is masked, so any id serves)",
    "bos": "texts and prompts start with no start token",
    "eos": "generation stops at max_new_tokens, and packed documents follow one another with no "
           "separator",
}
ABSENT = -1


class SpecialRoles:
    """Both tokenizers (ours and an imported tokenizer.json): which roles they lack, and how
    texts are framed without them."""

    missing_roles: tuple[str, ...] = ()  # of 'pad', 'bos', 'eos': see MISSING_ROLES

    @staticmethod
    def present(*ids: int) -> list[int]:
        """`ids` less absent roles (bos_id or eos_id ABSENT): a text's framing tokens."""
        return [token_id for token_id in ids if token_id != ABSENT]


def lang_symbol(tag: str) -> str:
    return f"<lang:{tag}>"


class Tokenizer(SpecialRoles):
    """A sentencepiece model with the stack's special ids; pickles (for grain workers).

    A model without pad, bos or eos (pad_id=-1 is sentencepiece's default) gets the stand-ins
    of MISSING_ROLES, listed in `missing_roles`."""

    def __init__(self, model_proto: bytes):
        self._model_proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.missing_roles = tuple(name for name in ("pad", "bos", "eos")
                                   if getattr(self._sp, f"{name}_id")() < 0)

    def has_piece(self, piece: str) -> bool:
        """Whether `piece` (e.g. '<mask>', '<lang:en>') is in the vocabulary."""
        return piece == self._sp.id_to_piece(self.unk_id) or (
            self._sp.piece_to_id(piece) != self.unk_id)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        return cls(epath.Path(path).read_bytes())

    def save(self, path: str | os.PathLike) -> None:
        """Writes the model atomically: a crash never leaves a truncated file at `path`."""
        path = epath.Path(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_bytes(self._model_proto)
        temporary.replace(path)

    def __getstate__(self) -> bytes:
        return self._model_proto

    def __setstate__(self, model_proto: bytes) -> None:
        self.__init__(model_proto)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without bos/eos."""
        return self._sp.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    @property
    def vocab_size(self) -> int:
        return self._sp.vocab_size()

    @property
    def pad_id(self) -> int:
        return self.unk_id if "pad" in self.missing_roles else self._sp.pad_id()

    @property
    def unk_id(self) -> int:
        return self._sp.unk_id()

    @property
    def bos_id(self) -> int:
        return self._sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self._sp.eos_id()

    # The ids of the stack's own symbols. A model that lacks one (one not trained by
    # train_tokenizer) gives the unk id: objectives check `has_piece` before they use them
    # (textgen_jax.objectives.Objective.check_vocabulary).
    @property
    def mask_id(self) -> int:
        return self._sp.piece_to_id("<mask>")

    @property
    def sep_id(self) -> int:
        return self._sp.piece_to_id("<sep>")

    @property
    def cls_id(self) -> int:
        return self._sp.piece_to_id("<cls>")

    def lang_id(self, tag: str) -> int:
        """The id of '<lang:tag>'; raises if the tokenizer was trained without that language."""
        token_id = self._sp.piece_to_id(lang_symbol(tag))
        if token_id == self.unk_id:
            raise ValueError(f"The tokenizer has no language {tag!r}; add it to "
                             "config.tokenizer.languages and retrain (delete tokenizer.model).")
        return token_id

    def id_to_piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id))


def _training_sentences(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    """Non-blank lines of `texts` (sentencepiece's unit of training), up to `max_chars` in all.

    Newlines are not learned from the data: the newline is a reserved symbol.
    """
    remaining = max_chars
    for text in texts:
        for line in text.split(NEWLINE):
            if not line.strip():
                continue
            line = line.encode("utf-8")[:_MAX_SENTENCE_BYTES].decode("utf-8", errors="ignore")
            yield line
            remaining -= len(line)
            if remaining <= 0:
                return


def train_tokenizer(
    texts: Iterable[str],
    model_path: str | os.PathLike,
    *,
    kind: str = "bpe",
    vocab_size: int = 8192,
    languages: Sequence[str] = (),
    max_chars: int = 20_000_000,
) -> Tokenizer:
    """Trains a `kind` ('bpe' or 'unigram') sentencepiece model on `texts`, saves it atomically.

    Deterministic: the same texts and arguments give the same model file.
    """
    if kind not in ("bpe", "unigram"):
        raise ValueError(f"config.tokenizer.kind={kind!r}: use 'bpe' or 'unigram'.")
    symbols = [*DEFAULT_SPECIAL_SYMBOLS, NEWLINE, *(lang_symbol(t) for t in languages)]
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_training_sentences(texts, max_chars),
            model_writer=model,
            model_type=kind,
            vocab_size=vocab_size,
            pad_id=0, unk_id=1, bos_id=2, eos_id=3,
            user_defined_symbols=symbols,
            byte_fallback=True,
            character_coverage=0.9995,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,  # runs of spaces (indentation) become pieces
            split_digits=True,
            max_sentence_length=_MAX_SENTENCE_BYTES,
            num_threads=_TRAINER_THREADS,
            minloglevel=2,
        )
    except RuntimeError as e:
        if "Vocabulary size" in str(e) or "vocab_size" in str(e):
            raise ValueError(
                f"config.tokenizer.vocab_size={vocab_size} is too large for this corpus "
                f"(sentencepiece: {e}); lower config.tokenizer.vocab_size.") from e
        raise
    tokenizer = Tokenizer(model.getvalue())
    tokenizer.save(model_path)
    return tokenizer


def load_or_train_tokenizer(
    workdir: str | os.PathLike,
    config: ml_collections.ConfigDict,
    *,
    process_index: int = 0,
    process_count: int = 1,
    timeout_s: float = 3600.0,
) -> Tokenizer:
    """The tokenizer at `workdir/tokenizer.model`, made by process 0 if missing.

    Process 0 copies config.tokenizer.model_file there, or trains a tokenizer on the training
    split: on every language's feature when config.data.languages is set (one vocabulary
    shared by all languages), else on config.data.text_key. The other processes wait (up to
    `timeout_s`) for the file to appear, which assumes a workdir shared by all processes.
    """
    from textgen_jax.data.hf_tokenizer import HF_TOKENIZER_FILENAME, HFTokenizer

    if (epath.Path(workdir) / HF_TOKENIZER_FILENAME).exists():  # an imported checkpoint's own
        return HFTokenizer.load(epath.Path(workdir) / HF_TOKENIZER_FILENAME)
    path = epath.Path(workdir) / TOKENIZER_FILENAME
    model_file = config.tokenizer.model_file
    if path.exists():
        if model_file and epath.Path(model_file).read_bytes() != path.read_bytes():
            raise ValueError(
                f"config.tokenizer.model_file={model_file!r} differs from {path}, the tokenizer "
                "this workdir was started with; use a new --workdir, or delete the workdir's "
                "tokenizer.model (and its checkpoints, whose ids it defines).")
        return Tokenizer.load(path)
    if process_index != 0:
        deadline = time.monotonic() + timeout_s
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Process {process_index}/{process_count} waited {timeout_s:.0f}s for "
                    f"{path}, which process 0 writes; is the workdir shared by all hosts?")
            time.sleep(1.0)
        return Tokenizer.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if model_file:
        if not epath.Path(model_file).is_file():
            raise FileNotFoundError(f"config.tokenizer.model_file={model_file!r} does not exist; "
                                    "give a sentencepiece .model file, or '' to train one.")
        tokenizer = Tokenizer.load(model_file)
        tokenizer.save(path)
        return tokenizer
    return train_tokenizer(
        _training_texts(config),
        path,
        kind=config.tokenizer.kind,
        vocab_size=config.tokenizer.vocab_size,
        languages=tuple(config.tokenizer.languages),
        max_chars=config.tokenizer.max_train_chars,
    )


def load_tokenizer(workdir: str | os.PathLike):
    """The workdir's tokenizer: an imported tokenizer.json, else our tokenizer.model."""
    from textgen_jax.data.hf_tokenizer import HF_TOKENIZER_FILENAME, HFTokenizer

    workdir = epath.Path(workdir)
    if (workdir / HF_TOKENIZER_FILENAME).exists():
        return HFTokenizer.load(workdir / HF_TOKENIZER_FILENAME)
    if not (workdir / TOKENIZER_FILENAME).exists():
        raise FileNotFoundError(f"{workdir} has no {TOKENIZER_FILENAME} (nor an imported "
                                f"{HF_TOKENIZER_FILENAME}): is it a textgen_jax workdir?")
    return Tokenizer.load(workdir / TOKENIZER_FILENAME)


def _training_texts(config: ml_collections.ConfigDict) -> Iterator[str]:
    """The training split's texts; with languages, theirs in turn, one example of each.

    Taking the languages in turn gives each about the same number of training texts, where
    XLM (§3.4) samples them with q_i ∝ p_i^0.5; on equal-sized languages the two agree.
    """
    # Imported here: sources pulls in TFDS, which loading an existing tokenizer never needs.
    from textgen_jax.data.sources import open_source, texts

    source = open_source(config.data, config.data.train_split)
    features = tuple(config.data.language_features) or (config.data.text_key,)
    streams = [texts(source, feature) for feature in features]
    while streams:
        for stream in list(streams):
            text = next(stream, None)
            if text is None:
                streams.remove(stream)
            else:
                yield text
