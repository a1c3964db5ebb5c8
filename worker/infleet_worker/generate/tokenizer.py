"""Text <-> token ids, and chat messages -> prompt text.

``ByteTokenizer`` needs no files (builtin://llama): ids 0-255 are bytes, then BOS and
EOS; larger ids of a wider vocabulary decode as ``id % 256`` so any sampled id is text.
``HFTokenizer`` reads a checkpoint's tokenizer.json with ``tokenizers`` and its chat
template from tokenizer_config.json; without one, a plain template is used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from infleet_worker.generate.config import ConfigError

Message = dict[str, str]


def plain_chat_prompt(messages: list[Message]) -> str:
    """``<|role|>\\ncontent\\n`` per message, then ``<|assistant|>\\n``."""
    parts = [f"<|{m['role']}|>\n{m['content']}\n" for m in messages]
    return "".join(parts) + "<|assistant|>\n"


class Tokenizer(Protocol):
    bos_id: int | None
    eos_ids: tuple[int, ...]

    def encode(self, text: str, add_special: bool = True) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def chat_prompt(self, messages: list[Message]) -> tuple[str, bool]:
        """The prompt text and whether encode() should still add special tokens."""
        ...


class ByteTokenizer:
    def __init__(self, bos_id: int = 256, eos_id: int = 257) -> None:
        self.bos_id: int | None = bos_id
        self.eos_ids: tuple[int, ...] = (eos_id,)
        self._special = {bos_id, eos_id}

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        ids = list(text.encode("utf-8"))
        return [self.bos_id, *ids] if add_special and self.bos_id is not None else ids

    def decode(self, ids: list[int]) -> str:
        data = bytes(i % 256 for i in ids if i not in self._special)
        return data.decode("utf-8", errors="replace")

    def chat_prompt(self, messages: list[Message]) -> tuple[str, bool]:
        return plain_chat_prompt(messages), True


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class HFTokenizer:
    def __init__(self, directory: Path, bos_id: int | None, eos_ids: tuple[int, ...]) -> None:
        from tokenizers import Tokenizer as RustTokenizer

        try:
            self._tok = RustTokenizer.from_file(str(directory / "tokenizer.json"))
        except Exception as e:
            raise ConfigError(f"cannot read {directory / 'tokenizer.json'}: {e}") from None
        self.bos_id = bos_id
        self.eos_ids = eos_ids
        self._template: Any = None
        self._bos_text = self._eos_text = ""
        cfg_path = directory / "tokenizer_config.json"
        if cfg_path.exists():
            self._read_config(json.loads(cfg_path.read_text()))

    def _read_config(self, doc: dict[str, Any]) -> None:
        self._bos_text = _token_text(doc.get("bos_token")) or ""
        self._eos_text = _token_text(doc.get("eos_token")) or ""
        template = doc.get("chat_template")
        if isinstance(template, list):  # [{name, template}, ...]: the default one
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        if isinstance(template, str):
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = _raise
            self._template = env.from_string(template)

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True))

    def chat_prompt(self, messages: list[Message]) -> tuple[str, bool]:
        if self._template is None:
            return plain_chat_prompt(messages), True
        text = self._template.render(
            messages=messages,
            add_generation_prompt=True,
            bos_token=self._bos_text,
            eos_token=self._eos_text,
        )
        return str(text), False


def _raise(message: str) -> None:
    raise ValueError(f"chat template: {message}")
