"""Token pieces a person can read: a byte of a split UTF-8 character shows as `<0xF0>`, not '�'."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.api.settings import Settings
from outlier_core.load.models import LoadedModel
from outlier_core.load.tokenizers import byte_tokenizer
from outlier_core.load.tokens import encode, token_pieces


def test_split_characters_show_their_bytes_and_whole_ones_stay_text() -> None:
    tokenizer = byte_tokenizer()
    ids = tokenizer("é 🙂 a", add_special_tokens=False).input_ids
    assert token_pieces(tokenizer, ids) == ("<0xC3>", "<0xA9>", " ", "<0xF0>", "<0x9F>", "<0x99>", "<0x82>", " ", "a")


def test_every_scan_and_heatmap_reads_the_pieces(tiny: LoadedModel) -> None:
    assert encode(tiny, "中", prepend_bos=True).tokens == ("<bos>", "<0xE4>", "<0xB8>", "<0xAD>")


@pytest.mark.real
def test_a_merged_byte_level_token_keeps_its_whole_characters(smol: LoadedModel) -> None:
    pieces = encode(smol, "Hot day, 中文 🦜", prepend_bos=False).tokens  # the parrot is split over byte tokens
    assert "\ufffd" not in "".join(pieces)
    assert " <0xF0><0x9F>" in pieces and "中" in pieces


def test_tokenize_answers_the_pieces_and_the_limit(tiny: LoadedModel, tmp_path) -> None:
    with TestClient(create_app(Settings(max_tokens=64, runs_dir=tmp_path), model=tiny)) as http:
        answer = http.post("/api/tokenize", json={"text": "ab", "prepend_bos": True}).json()
        assert answer == {"tokens": ["<bos>", "a", "b"], "max_tokens": 64}
        too_long = http.post("/api/tokenize", json={"text": "x" * 100})
        assert too_long.status_code == 422 and too_long.json()["field"] == "text"
