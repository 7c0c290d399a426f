"""`TextFiles`: the user's local .txt / .jsonl files as a TFDS dataset with a `text` feature.

Documents:
  * `.txt`: a file is one document. A file over `MAX_TXT_DOCUMENT_CHARS` is cut at blank lines
    into consecutive documents of at most that size (a longer paragraph stays whole), so that
    one big file (a book) still yields a validation split.
  * `.jsonl`: each non-blank line is a JSON object and one document; its text is the field
    `config.data.text_key`. Records whose text is empty are skipped.

Splits: a document goes to validation when a stable hash of its text falls in ~3% (identical
documents therefore share a split); with two or more documents at least one is held out.

The builder config is named after a hash of the resolved file list with the files' sizes and
modification times, so editing, adding or removing a file prepares a fresh copy.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import tensorflow_datasets as tfds

from textgen_jax.data._tfds_base import LocalGeneratorBasedBuilder

MAX_TXT_DOCUMENT_CHARS = 20_000
VALIDATION_PER_MILLE = 30
_SUFFIXES = (".txt", ".jsonl")
_BLANK_LINES = re.compile(r"\n[ \t\f\r]*\n")


class TextFilesError(ValueError):
    """A local text file that cannot be read as a corpus; the message names the file and fix."""


def _text_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def resolve_files(pattern: str) -> list[Path]:
    """The sorted, absolute .txt/.jsonl files matching the glob `pattern` (`**` recurses)."""
    paths = sorted({Path(p).resolve() for p in glob.glob(os.path.expanduser(pattern),
                                                           recursive=True)})
    paths = [p for p in paths if p.is_file()]
    if not paths:
        raise TextFilesError(f"config.data.files={pattern!r} matches no file; check the path "
                             "(a glob such as 'corpus/*.txt' or 'data/**/*.jsonl').")
    unsupported = [str(p) for p in paths if p.suffix not in _SUFFIXES]
    if unsupported:
        raise TextFilesError(f"config.data.files={pattern!r} matches {unsupported[:3]}, which "
                             f"are neither .txt nor .jsonl; narrow the glob to those.")
    return paths


def _decode(data: bytes, path: Path, *, line: int | None = None, offset: int = 0) -> str:
    """`data` as UTF-8, or an error naming the file (and line) and the bad byte's offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        where = f"{path}:{line}" if line is not None else str(path)
        raise TextFilesError(
            f"{where} is not UTF-8 (invalid byte 0x{data[e.start]:02x} at byte offset "
            f"{offset + e.start}); convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8`."
        ) from None


def _split_paragraphs(text: str, max_chars: int) -> list[str]:
    """`text` cut at blank lines into consecutive chunks of at most `max_chars` characters."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for paragraph in _BLANK_LINES.split(text):
        if current and size + len(paragraph) + 2 > max_chars:
            chunks.append("\n\n".join(current))
            current, size = [], 0
        current.append(paragraph)
        size += len(paragraph) + 2
    chunks.append("\n\n".join(current))
    return [c for c in (chunk.strip() for chunk in chunks) if c]


def _txt_documents(path: Path) -> Iterator[tuple[str, str]]:
    text = _decode(path.read_bytes(), path).removeprefix("\ufeff").strip()
    if len(text) <= MAX_TXT_DOCUMENT_CHARS:
        yield f"{path}", text
    else:
        for i, chunk in enumerate(_split_paragraphs(text, MAX_TXT_DOCUMENT_CHARS)):
            yield f"{path}#{i}", chunk


def _jsonl_documents(path: Path, text_key: str) -> Iterator[tuple[str, str]]:
    offset = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            line = _decode(raw, path, line=number, offset=offset).removeprefix("\ufeff")
            offset += len(raw)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise TextFilesError(f"{path}:{number} is not JSON ({e.msg}); each line of a "
                                     ".jsonl file must be one JSON object.") from None
            if not isinstance(record, dict) or text_key not in record:
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise TextFilesError(
                    f"{path}:{number} has no field {text_key!r} (it has {keys}); set "
                    "config.data.text_key to the field that holds the text.")
            text = record[text_key]
            if not isinstance(text, str):
                raise TextFilesError(f"{path}:{number}: field {text_key!r} is a "
                                     f"{type(text).__name__}, not a string.")
            if text.strip():
                yield f"{path}:{number}", text


def read_documents(paths: list[Path], text_key: str) -> Iterator[tuple[str, str]]:
    """(key, text) for every document of `paths`, in file order; raises TextFilesError."""
    for path in paths:
        if path.stat().st_size == 0 or not path.read_bytes().strip():
            raise TextFilesError(f"{path} is empty; remove it or narrow config.data.files.")
        if path.suffix == ".txt":
            yield from _txt_documents(path)
        else:
            yield from _jsonl_documents(path, text_key)


class TextFilesConfig(tfds.core.BuilderConfig):
    """The files behind one `TextFiles` dataset; the name fingerprints their contents."""

    def __init__(self, *, pattern: str, text_key: str = "text"):
        self.paths = resolve_files(pattern)
        self.text_key = text_key
        fingerprint = hashlib.sha256(text_key.encode("utf-8"))
        for path in self.paths:
            stat = path.stat()
            fingerprint.update(f"\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode("utf-8"))
        super().__init__(
            name=f"files_{fingerprint.hexdigest()[:16]}",
            description=f"{len(self.paths)} file(s) matching {pattern!r}.")


class TextFiles(LocalGeneratorBasedBuilder):
    """Local .txt/.jsonl files as a dataset with a `text` feature; see the module docstring."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # The files are local.
        config: TextFilesConfig = self.builder_config
        # A first pass hashes every document (and surfaces any bad file before writing starts);
        # only the hashes stay in memory, so the corpus may be larger than RAM.
        hashes = [_text_hash(text) for _, text in read_documents(config.paths, config.text_key)]
        validation = {i for i, h in enumerate(hashes) if h % 1000 < VALIDATION_PER_MILLE}
        if not validation and len(hashes) >= 2:
            validation = {min(range(len(hashes)), key=hashes.__getitem__)}
        if not hashes:
            raise TextFilesError(f"{self.builder_config.description} No document has text.")
        splits = {"train": self._generate_examples(validation, keep=False)}
        if validation:  # a single document makes no validation split (TFDS rejects empty ones)
            splits["validation"] = self._generate_examples(validation, keep=True)
        return splits

    def _generate_examples(self, validation: set[int], keep: bool):
        config: TextFilesConfig = self.builder_config
        documents = read_documents(config.paths, config.text_key)
        for index, (key, text) in enumerate(documents):
            if (index in validation) == keep:
                yield key, {"text": text}


def prepared_text_files(pattern: str, text_key: str, data_dir: str) -> TextFiles:
    """The `TextFiles` builder for the files matching `pattern`, prepared under `data_dir`."""
    builder = TextFiles(config=TextFilesConfig(pattern=pattern, text_key=text_key),
                        data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()  # A no-op when these exact files were prepared before.
    return builder
