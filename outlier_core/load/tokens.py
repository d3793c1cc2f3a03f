"""The one tokenization path: the tokenizer adds nothing, BOS is prepended only when asked.

SmolLM2's tokenizer adds no BOS while `bridge.to_tokens` prepends one by default, so
positions would shift by one between the two. Every caller goes through `encode`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel


@dataclass(frozen=True)
class Encoded:
    ids: torch.Tensor  # (1, T) on the model's device
    tokens: tuple[str, ...]  # T decoded pieces, one per position
    prepend_bos: bool


def encode(model: LoadedModel, text: str, prepend_bos: bool = True, max_tokens: int | None = None) -> Encoded:
    if not isinstance(text, str) or not text:
        raise InputError("text", "must be a non-empty string")
    ids = model.tokenizer(text, add_special_tokens=False).input_ids
    if prepend_bos:
        ids = [model.bos_token_id, *ids]
    limit = min(max_tokens or model.n_ctx, model.n_ctx)
    if len(ids) > limit:
        raise InputError("text", f"is {len(ids)} tokens long; the limit is {limit}")
    return Encoded(
        ids=torch.tensor([ids], device=model.device),
        tokens=token_pieces(model.tokenizer, ids),
        prepend_bos=prepend_bos,
    )


BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # SentencePiece's byte fallback pieces (Llama, Gemma)


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: the printable stand-in character of each of the 256 bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    stand_ins, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            stand_ins[chr(byte)] = byte
        else:
            stand_ins[chr(256 + extra)] = byte
            extra += 1
    return stand_ins


def _shown_bytes(raw: bytes) -> str:
    """The UTF-8 text in `raw`, with every byte that is not part of a whole character as `<0xF0>`."""
    shown, start = [], 0
    while start < len(raw):
        try:
            shown.append(raw[start:].decode("utf-8"))
            break
        except UnicodeDecodeError as err:
            shown.append(raw[start:start + err.start].decode("utf-8"))
            shown.extend(f"<0x{b:02X}>" for b in raw[start + err.start:start + err.end])
            start += err.end
    return "".join(shown)


def token_pieces(tokenizer: Any, ids: list[int]) -> tuple[str, ...]:
    """One readable piece per id. A token holding part of a UTF-8 character (an emoji or CJK
    character split over byte tokens) decodes to '\ufffd'; it is shown as its bytes instead."""
    pieces = []
    for i in ids:
        piece = tokenizer.decode([i])
        if "\ufffd" in piece:
            piece = _byte_piece(tokenizer.convert_ids_to_tokens(i)) or piece
        pieces.append(piece)
    return tuple(pieces)


def _byte_piece(raw_token: str | None) -> str | None:
    """`<0xF0>` for a byte-fallback piece or the bytes of a byte-level BPE piece; None for anything else."""
    if not raw_token:
        return None
    if BYTE_TOKEN.fullmatch(raw_token):
        return raw_token.upper().replace("0X", "0x")
    alphabet = _byte_level_alphabet()
    if not all(c in alphabet for c in raw_token):
        return None
    return _shown_bytes(bytes(alphabet[c] for c in raw_token))
