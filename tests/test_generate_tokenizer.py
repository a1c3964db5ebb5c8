"""Tokenizers: the builtin byte vocabulary, and a checkpoint's tokenizer.json with the
chat template of its tokenizer_config.json (or the plain template without one)."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers

from infleet_worker.generate.tokenizer import ByteTokenizer, HFTokenizer, plain_chat_prompt

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


def word_level(path: Path) -> None:
    vocab = {"<s>": 0, "</s>": 1, "[UNK]": 2, "hi": 3, "there": 4, "be": 5, "brief": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path / "tokenizer.json"))


def test_byte_tokenizer_round_trips_utf8() -> None:
    tok = ByteTokenizer()
    ids = tok.encode("héllo")
    assert ids[0] == 256 and tok.decode(ids) == "héllo"
    assert tok.chat_prompt(MESSAGES) == (plain_chat_prompt(MESSAGES), True)


def test_checkpoint_tokenizer_and_chat_template(tmp_path: Path) -> None:
    word_level(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {"bos_token": "<s>", "eos_token": {"content": "</s>"}, "chat_template": TEMPLATE}
        )
    )
    tok = HFTokenizer(tmp_path, bos_id=0, eos_ids=(1,))
    assert tok.encode("hi there", add_special=False) == [3, 4]
    assert tok.decode([3, 4]) == "hi there"
    text, add_special = tok.chat_prompt(MESSAGES)
    assert text == "<s>[system] be brief\n[user] hi there\n[assistant] "
    assert add_special is False  # the template already holds the BOS


def test_checkpoint_without_template_uses_the_plain_one(tmp_path: Path) -> None:
    word_level(tmp_path)
    tok = HFTokenizer(tmp_path, bos_id=0, eos_ids=(1,))
    assert tok.chat_prompt(MESSAGES) == (plain_chat_prompt(MESSAGES), True)
