"""A Hugging Face `tokenizer.json` with the interface of our sentencepiece `Tokenizer`.

Imported checkpoints keep their own vocabulary: the workdir holds their tokenizer.json and
every pipeline, the sampler and fill-mask read it through this adapter. Needs the `tokenizers`
library (`pip install 'textgen_jax[hf]'`).

The stack's roles (pad, unk, bos, eos, '<mask>', '<sep>', '<cls>') are found among the
tokenizer's special tokens by their usual spellings: '<pad>' or '[PAD]', '<s>' or '[CLS]' for
bos, and so on; GPT-2's '<|endoftext|>' serves as pad, bos and eos. A role it lacks gets the
stand-in of tokenizer.MISSING_ROLES (GPT-1's tokenizer has only '<unk>').
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from etils import epath

from textgen_jax.data.tokenizer import ABSENT, SpecialRoles

HF_TOKENIZER_FILENAME = "tokenizer.json"

# Role -> spellings, in order of preference.
_ROLES = {
    "pad": ("<pad>", "[PAD]", "<|endoftext|>"),
    "unk": ("<unk>", "[UNK]", "<|endoftext|>"),
    "bos": ("<s>", "[CLS]", "<|endoftext|>"),
    "eos": ("</s>", "[SEP]", "<|endoftext|>"),
    "<mask>": ("<mask>", "[MASK]", "<special1>"),  # XLM's mask is <special1>
    "<sep>": ("</s>", "[SEP]"),
    "<cls>": ("<s>", "[CLS]"),
}


class HFTokenizer(SpecialRoles):
    """tokenizer.json -> encode/decode and the stack's special ids; pickles (grain workers)."""

    def __init__(self, tokenizer_json: str):
        try:
            from tokenizers import Tokenizer as _Tokenizer
        except ImportError as e:
            raise ImportError("A tokenizer.json needs the `tokenizers` library: "
                              "pip install 'textgen_jax[hf]'.") from e
        self._json = tokenizer_json
        self._tokenizer = _Tokenizer.from_str(tokenizer_json)
        vocab = self._tokenizer.get_vocab(with_added_tokens=True)
        self._ids = {role: next((vocab[s] for s in spellings if s in vocab), None)
                     for role, spellings in _ROLES.items()}
        if self._ids["unk"] is None:  # byte-level BPEs have no unknown token
            self._ids["unk"] = self._ids["pad"] if self._ids["pad"] is not None else 0
        # Looked for by the spellings of _ROLES; their stand-ins: tokenizer.MISSING_ROLES.
        self.missing_roles = tuple(role for role in ("pad", "bos", "eos")
                                   if self._ids[role] is None)
        if self._ids["pad"] is None:
            self._ids["pad"] = self._ids["unk"]
        for role in ("bos", "eos"):
            if self._ids[role] is None:
                self._ids[role] = ABSENT

    @classmethod
    def load(cls, path: str | os.PathLike) -> HFTokenizer:
        return cls(epath.Path(path).read_text(encoding="utf-8"))  # a gs:// workdir's too

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(self._json, encoding="utf-8")
        os.replace(temporary, path)

    def __getstate__(self) -> str:
        return self._json

    def __setstate__(self, tokenizer_json: str) -> None:
        self.__init__(tokenizer_json)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return self._ids["pad"]

    @property
    def unk_id(self) -> int:
        return self._ids["unk"]

    @property
    def bos_id(self) -> int:
        return self._ids["bos"]

    @property
    def eos_id(self) -> int:
        return self._ids["eos"]

    @property
    def mask_id(self) -> int:
        return self._role("<mask>")

    @property
    def sep_id(self) -> int:
        return self._role("<sep>")

    @property
    def cls_id(self) -> int:
        return self._role("<cls>")

    def _role(self, role: str) -> int:
        token_id = self._ids[role]
        return self.unk_id if token_id is None else token_id  # as Tokenizer: check has_piece

    def has_piece(self, piece: str) -> bool:
        """'<mask>', '<sep>', '<cls>': whether the tokenizer has that role; '<lang:xx>': True,
        since an imported model's languages are its language embeddings, not tokens."""
        if piece in self._ids:
            return self._ids[piece] is not None
        if piece.startswith("<lang:"):
            return True
        return self._tokenizer.token_to_id(piece) is not None

    def id_to_piece(self, token_id: int) -> str:
        return self._tokenizer.id_to_token(int(token_id))

