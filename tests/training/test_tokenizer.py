"""The byte-level BPE every Acepilot tokenizer comes from: it must round-trip any text."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer
from transformers import AutoTokenizer

from acepilot.training.tiny.sample import held_out_text
from acepilot.training.tokenizer import EOS_TOKEN

TRICKY_TEXTS = (
    "def f(x):\n\treturn x  # tab-indented\n",
    "class A:\r\n    pass\r\n",  # CRLF
    "s = 'héllo wörld'  # ünïcödé\nπ = 3.14159\n",
    "print('🐍 emoji, 中文, عربي, ZWJ 👩\u200d💻')\n",
    "x = 1   \n\n\n        \n    y = [ 1 , 2 ]  . ,\n",  # trailing spaces, odd spacing
    "\x00\x01 control bytes \x7f and a lone surrogate-free \ufffd\n",
    "",
    "   leading spaces",
    "a <|endoftext|> b",
)


def test_tokenizer_round_trips_code_exactly(tiny_tokenizer_dir: Path) -> None:
    hf = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    raw = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))  # what the server loads
    eos = raw.token_to_id(EOS_TOKEN)
    assert hf.eos_token_id == hf.bos_token_id == eos
    assert raw.get_vocab_size() == len(hf) == 1000
    for text in (*TRICKY_TEXTS, held_out_text(20_000)):
        ids = hf(text, add_special_tokens=False)["input_ids"]
        assert raw.encode(text).ids == ids
        assert hf.decode(ids) == text
        assert raw.decode(ids, skip_special_tokens=False) == text
    assert hf("a <|endoftext|> b")["input_ids"].count(eos) == 1
    # It learned code: held-out stdlib code compresses well beyond bytes.
    held_out = held_out_text(20_000)
    assert len(held_out) / len(raw.encode(held_out).ids) > 2.5
