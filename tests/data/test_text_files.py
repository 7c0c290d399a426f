"""The user-files builder and its errors."""

from __future__ import annotations

import json

import pytest

from textgen_jax.data.text_files import TextFilesError, prepared_text_files


def _texts(builder, split: str) -> list[str]:
    source = builder.as_data_source(split)
    return [source[i]["text"].decode("utf-8") for i in range(len(source))]


def test_txt_and_jsonl_documents_split_without_overlap(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "story.txt").write_text("Once upon a time.\n\nThe end.\n", encoding="utf-8")
    records = [{"text": f"Document number {i} is here.", "id": i} for i in range(40)]
    (corpus / "docs.jsonl").write_text(
        "\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    builder = prepared_text_files(str(corpus / "*"), "text", str(tmp_path / "data"))
    train, validation = _texts(builder, "train"), _texts(builder, "validation")
    expected = {"Once upon a time.\n\nThe end."} | {r["text"] for r in records}
    assert sorted(train + validation) == sorted(expected)
    assert validation and not set(train) & set(validation)


def test_large_txt_file_is_cut_at_paragraphs(tmp_path):
    paragraphs = [f"Paragraph {i}. " + "word " * 200 for i in range(200)]
    (tmp_path / "book.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    builder = prepared_text_files(str(tmp_path / "*.txt"), "text", str(tmp_path / "data"))
    documents = _texts(builder, "train") + _texts(builder, "validation")
    assert len(documents) > 5 and _texts(builder, "validation")
    pieces = sorted(p.strip() for d in documents for p in d.split("\n\n"))
    assert pieces == sorted(p.strip() for p in paragraphs)


def test_changed_file_prepares_again(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first version\n", encoding="utf-8")
    first = prepared_text_files(str(path), "text", str(tmp_path / "data"))
    path.write_text("second, longer version\n", encoding="utf-8")
    second = prepared_text_files(str(path), "text", str(tmp_path / "data"))
    assert first.builder_config.name != second.builder_config.name
    assert _texts(second, "train") == ["second, longer version"]
    assert list(second.info.splits.keys()) == ["train"]  # one document: nothing to hold out


def test_glob_matching_nothing(tmp_path):
    with pytest.raises(TextFilesError, match="matches no file"):
        prepared_text_files(str(tmp_path / "*.txt"), "text", str(tmp_path / "data"))


def test_empty_file_is_named(tmp_path):
    (tmp_path / "good.txt").write_text("Some text.", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(TextFilesError, match=r"empty\.txt is empty"):
        prepared_text_files(str(tmp_path / "*.txt"), "text", str(tmp_path / "data"))


def test_non_utf8_names_file_and_offset(tmp_path):
    (tmp_path / "latin.txt").write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(TextFilesError, match=r"latin\.txt is not UTF-8.*byte offset 3.*UTF-8"):
        prepared_text_files(str(tmp_path / "*.txt"), "text", str(tmp_path / "data"))


@pytest.mark.parametrize("line, message", [
    ("{not json", r"bad\.jsonl:2 is not JSON"),
    ('{"body": "x"}', r"bad\.jsonl:2 has no field 'text' \(it has \['body'\]\)"),
])
def test_bad_jsonl_line_names_file_and_line(tmp_path, line, message):
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(TextFilesError, match=message):
        prepared_text_files(str(tmp_path / "*.jsonl"), "text", str(tmp_path / "data"))
