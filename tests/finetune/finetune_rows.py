"""Checks shared by the fine-tuning pipeline tests: the layout of one architecture's rows."""

from __future__ import annotations

import numpy as np

from textgen_jax.data.tokenizer import Tokenizer

def flat_rows(batch: dict[str, np.ndarray], seq_len: int) -> list[dict[str, np.ndarray]]:
    """The text rows of a batch, whatever its leading axes ([B], [B, choices], [B, 2])."""
    lead = batch["inputs"].shape[:-1]
    count = int(np.prod(lead))
    per_row = {k: v.reshape(count, *v.shape[len(lead):]) for k, v in batch.items()
               if v.shape[:len(lead)] == lead}
    return [{k: v[i] for k, v in per_row.items()} for i in range(count)]


def check_text_row(row: dict[str, np.ndarray], tok: Tokenizer, arch: str, num_texts: int,
                   seq_len: int, lang_id: int = 0) -> tuple[list[int], list[int]]:
    """Asserts the special tokens, masks and padding of one row; returns its texts' ids."""
    ids = row["inputs"]
    assert ids.shape == (seq_len,) and ids.dtype == np.int32
    length = int(row["segment_ids"].sum())
    assert 0 < length <= seq_len
    np.testing.assert_array_equal(row["segment_ids"], np.arange(seq_len) < length)
    assert (ids[length:] == tok.pad_id).all() and (ids[:length] != tok.pad_id).all()
    real = ids[:length].tolist()
    if arch == "bert":
        assert real[0] == tok.cls_id and real[-1] == tok.sep_id
        assert real.count(tok.sep_id) == num_texts and tok.cls_id not in real[1:]
        first_sep = real.index(tok.sep_id)
        np.testing.assert_array_equal(
            row["token_types"], (np.arange(seq_len) > first_sep) & (np.arange(seq_len) < length))
        texts = [real[1:first_sep], real[first_sep + 1:-1]]
    elif arch in ("gpt", "gpt2"):
        assert real[0] == tok.bos_id and real[-1] == tok.eos_id
        assert int(row["extract_positions"]) == length - 1  # the extract token's state
        assert real.count(tok.sep_id) == num_texts - 1 and real.count(tok.eos_id) == 1
        delim = real.index(tok.sep_id) if num_texts == 2 else length - 1
        texts = [real[1:delim], real[delim + 1:-1]]
    elif arch == "bart":
        assert real[0] == tok.bos_id and real[-1] == tok.eos_id
        assert int(row["extract_positions"]) == length - 1
        assert real.count(tok.eos_id) == (3 if num_texts == 2 else 1)
        np.testing.assert_array_equal(row["decoder_inputs"][1:], ids[:-1])
        assert row["decoder_inputs"][0] == tok.eos_id
        np.testing.assert_array_equal(row["decoder_segment_ids"], row["segment_ids"])
        end_a = real.index(tok.eos_id)
        texts = [real[1:end_a], real[end_a + 2:-1]]
    else:  # xlm
        assert real[0] == tok.bos_id and real[-1] == tok.eos_id
        assert real.count(tok.eos_id) == num_texts
        np.testing.assert_array_equal(row["langs"], lang_id * row["segment_ids"])
        end_a = real.index(tok.eos_id)
        texts = [real[1:end_a], real[end_a + 1:-1]]
    if arch != "bart":
        np.testing.assert_array_equal(row["positions"][:length], np.arange(length))
    return texts[0], texts[1] if num_texts == 2 else []


def is_truncation_of(kept: list[int], full: list[int]) -> bool:
    """Whether `kept` is `full` cut at its end (the pipelines truncate from the end)."""
    return len(kept) <= len(full) and list(full[:len(kept)]) == list(kept)


def xnli_examples(_builder, split, **_) -> list[dict]:
    """Four hand-written XNLI examples (English and German) for tfds.testing.mock_data's
    as_data_source_fn: random mock text cannot keep the languages of a pair parallel."""
    del split
    return [{"premise": {"en": b"A man is eating.", "de": b"Ein Mann isst."},
             "hypothesis": {"language": np.array([b"de", b"en"]),
                            "translation": np.array([b"Jemand isst.", b"Someone eats."])},
             "label": np.int64(label)} for label in (0, 1, 2, 1)]
