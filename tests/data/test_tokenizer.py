"""Sentencepiece tokenizer training, special symbols and load-or-train."""

from __future__ import annotations

import pickle

import pytest

from textgen_jax.config import base_config
from textgen_jax.data.corpus import prepared_stdlib_docstrings
from textgen_jax.data.sources import texts
from textgen_jax.data.tokenizer import (
    TOKENIZER_FILENAME,
    Tokenizer,
    load_or_train_tokenizer,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def validation_texts(stdlib_data_dir) -> list[str]:
    builder = prepared_stdlib_docstrings("documents", stdlib_data_dir)
    return list(texts(builder.as_data_source("validation"), "text"))


def test_round_trip_keeps_newlines_indentation_and_rare_characters(stdlib_tokenizer,
                                                                   validation_texts):
    samples = validation_texts[:5] + ["def f(x):\n\tif x:\n        return 'é 漢字 😀'\n\n\n  end"]
    for text in samples:
        ids = stdlib_tokenizer.encode(text)
        assert stdlib_tokenizer.decode(ids) == text
        assert stdlib_tokenizer.unk_id not in ids  # byte fallback: nothing is unknown
    # A trained vocabulary compresses prose well below one token per character.
    prose = validation_texts[0]
    assert len(stdlib_tokenizer.encode(prose)) < 0.5 * len(prose)


def test_special_ids_are_fixed_and_distinct(stdlib_tokenizer):
    tok = stdlib_tokenizer
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    special = {tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.mask_id, tok.sep_id, tok.cls_id}
    assert len(special) == 7 and max(special) < tok.vocab_size == 1000


def test_special_symbols_in_text_encode_to_single_ids(stdlib_tokenizer):
    tok = stdlib_tokenizer
    ids = tok.encode("The <mask> sat on the mat.<sep>Then<cls>")
    for symbol_id in (tok.mask_id, tok.sep_id, tok.cls_id):
        assert ids.count(symbol_id) == 1
    assert tok.decode(ids) == "The <mask> sat on the mat.<sep>Then<cls>"
    # bos/eos are control ids: the text "<s>" is spelled out, never turned into bos.
    assert tok.bos_id not in tok.encode("<s> and </s>")


def test_training_is_deterministic_with_languages_and_pickles(tmp_path, validation_texts):
    models = [train_tokenizer(validation_texts, tmp_path / f"{i}.model", kind="unigram",
                              vocab_size=800, languages=("en", "fr"), max_chars=100_000)
              for i in range(2)]
    assert (tmp_path / "0.model").read_bytes() == (tmp_path / "1.model").read_bytes()
    tok = models[0]
    assert tok.lang_id("en") != tok.lang_id("fr")
    assert tok.encode("<lang:fr>Bonjour").count(tok.lang_id("fr")) == 1
    with pytest.raises(ValueError, match="no language 'de'.*config.tokenizer.languages"):
        tok.lang_id("de")
    restored = pickle.loads(pickle.dumps(tok))
    assert restored.encode("Return the value.") == tok.encode("Return the value.")


def test_vocab_too_large_for_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=50000 is too large.*lower"):
        train_tokenizer(["A tiny corpus of a few words."] * 3, tmp_path / "t.model",
                        kind="unigram", vocab_size=50_000)
    assert not (tmp_path / "t.model").exists()


def test_load_or_train_reuses_the_saved_model(stdlib_data_dir, tmp_path):
    config = base_config()
    config.data.data_dir = stdlib_data_dir
    config.tokenizer.vocab_size = 600
    config.tokenizer.max_train_chars = 50_000
    trained = load_or_train_tokenizer(tmp_path, config)
    path = tmp_path / TOKENIZER_FILENAME
    assert Tokenizer.load(path).encode("Return the list.") == trained.encode("Return the list.")
    assert [p.name for p in tmp_path.iterdir()] == [TOKENIZER_FILENAME]  # no temp file left
    config.tokenizer.vocab_size = 700  # ignored: an existing model is loaded, not retrained
    assert load_or_train_tokenizer(tmp_path, config).vocab_size == 600


def test_other_processes_wait_for_process_0(tmp_path):
    with pytest.raises(TimeoutError, match="process 0 writes"):
        load_or_train_tokenizer(tmp_path, base_config(), process_index=1, process_count=2,
                                timeout_s=0.0)


def _pairs_config(data_dir: str, languages: tuple[str, ...] = (),
                  features: tuple[str, ...] = ()):
    config = base_config()
    config.data.data_dir = data_dir
    config.data.dataset = "stdlib_docstrings/pairs"
    config.data.languages = config.tokenizer.languages = languages
    config.data.language_features = features
    config.tokenizer.vocab_size = 800
    config.tokenizer.max_train_chars = 200_000
    return config


def test_a_multilingual_vocabulary_is_trained_on_every_language(stdlib_data_dir, tmp_path):
    docstrings_only = load_or_train_tokenizer(tmp_path / "en", _pairs_config(stdlib_data_dir))
    shared = load_or_train_tokenizer(tmp_path / "shared", _pairs_config(
        stdlib_data_dir, ("en", "code"), ("docstring", "code")))
    source = prepared_stdlib_docstrings("pairs", stdlib_data_dir).as_data_source("validation")
    code = list(texts(source, "code"))[:300]
    docstrings = list(texts(source, "docstring"))[:300]

    def tokens(tokenizer, corpus):
        return sum(len(tokenizer.encode(text)) for text in corpus)

    # Code is a language of the shared vocabulary: it takes fewer tokens (0.88x when written)
    # than with a vocabulary of docstrings alone, while docstrings lose little (1.02x).
    assert tokens(shared, code) < 0.92 * tokens(docstrings_only, code)
    assert tokens(shared, docstrings) < 1.1 * tokens(docstrings_only, docstrings)
    assert shared.has_piece("<lang:code>") and not docstrings_only.has_piece("<lang:code>")


def test_model_file_is_copied_into_the_workdir_and_must_not_change(stdlib_tokenizer, tmp_path):
    model_file = tmp_path / "mine.model"
    stdlib_tokenizer.save(model_file)
    config = base_config()
    config.data.dataset = "no_such_dataset"  # never read: nothing is trained
    config.tokenizer.model_file = str(model_file)
    workdir = tmp_path / "run"
    loaded = load_or_train_tokenizer(workdir, config)
    assert (workdir / TOKENIZER_FILENAME).read_bytes() == model_file.read_bytes()
    assert loaded.encode("Return the list.") == stdlib_tokenizer.encode("Return the list.")
    assert load_or_train_tokenizer(workdir, config).vocab_size == stdlib_tokenizer.vocab_size
    other = tmp_path / "other.model"
    other.write_bytes(b"x" + model_file.read_bytes())
    config.tokenizer.model_file = str(other)
    with pytest.raises(ValueError, match="model_file=.*other.model.*differs.*new --workdir"):
        load_or_train_tokenizer(workdir, config)
    config.tokenizer.model_file = str(tmp_path / "missing.model")
    with pytest.raises(FileNotFoundError, match="missing.model"):
        load_or_train_tokenizer(tmp_path / "run2", config)


def test_a_model_without_a_pad_id_pads_with_unk_and_says_so(tmp_path):
    """Padding is masked, so any id serves: sentencepiece's default pad_id=-1 is the unk id."""
    import io

    import sentencepiece as spm
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["Return the list of names.", "Open the file and read it."] * 50),
        model_writer=model, model_type="bpe", vocab_size=60, minloglevel=2)  # pad_id=-1
    tokenizer = Tokenizer(model.getvalue())
    assert tokenizer.missing_roles == ("pad",)
    assert tokenizer.pad_id == tokenizer.unk_id >= 0
    assert tokenizer.present(tokenizer.bos_id, tokenizer.eos_id) == [tokenizer.bos_id,
                                                                     tokenizer.eos_id]
