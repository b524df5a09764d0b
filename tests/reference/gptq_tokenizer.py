"""The tokenizer files of the tiny GPTQ checkpoints (tests/data/gptq/models): a byte-level BPE
`tokenizer.json` that fills their 256-token vocabulary exactly (ids 0..2 the special <unk>,
<s>, </s>; id 3 the one merge " t"; ids 4..255 the bytes 4..255, every byte text holds),
`tokenizer_config.json` with a small chat template, and `generation_config.json`.

Standard library only, so the files can be rewritten without torch:
    python tests/reference/gptq_tokenizer.py
make_gptq_models.py calls `write_tokenizer` for every folder it writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MODELS = Path(__file__).resolve().parents[1] / "data" / "gptq" / "models"
SPECIAL = ("<unk>", "<s>", "</s>")
MERGE = ("\u0120", "t")  # " t" in GPT-2's byte characters (a gpt2 vocabulary needs a merge)
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def _byte_chars() -> list[str]:
    """GPT-2's byte -> printable character table (bytes_to_unicode)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def tokenizer_json() -> dict[str, object]:
    chars = _byte_chars()
    vocab = {token: i for i, token in enumerate(SPECIAL)}
    vocab |= {MERGE[0] + MERGE[1]: 3} | {chars[b]: b for b in range(4, 256)}
    added = [
        {"id": i, "content": token, "single_word": False, "lstrip": False, "rstrip": False}
        | {"normalized": False, "special": True}
        for i, token in enumerate(SPECIAL)
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": None,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None}
        | {"end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False}
        | {"vocab": vocab, "merges": [list(MERGE)]},
    }


def write_tokenizer(folder: Path) -> None:
    def dump(name: str, data: object) -> None:
        (folder / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    dump("tokenizer.json", tokenizer_json())
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": False}
    dump("tokenizer_config.json", config | {"chat_template": CHAT_TEMPLATE})
    dump("generation_config.json", {"bos_token_id": 1, "eos_token_id": 2})


def main() -> int:
    folders = sorted(p for p in MODELS.iterdir() if p.is_dir())
    for folder in folders:
        write_tokenizer(folder)
    print(f"wrote the tokenizer files of {len(folders)} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
