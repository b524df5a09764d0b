"""Known defects of published GGUF files are repaired before the tokenizer reads them
(tmac_core.tokenizer.load.corrected_metadata)."""

from __future__ import annotations

from tests.runtime.test_tokenizer_bpe import _tiny_md
from tmac_core.tokenizer.load import BITNET_2B4T_TEMPLATE, corrected_metadata, tokenizer_from_gguf

# what convert-ms-to-gguf-bitnet.py writes into the official 2B-4T GGUF
PLACEHOLDER = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ 'Human: ' + message['content'] + "
    "'\\n\\nBITNETAssistant: ' + eos_token }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)


def _bitnet_md(**extra):
    md = _tiny_md(**extra)
    md["tokenizer.ggml.tokens"] = [*md["tokenizer.ggml.tokens"], "<|begin_of_text|>", "<|eot_id|>"]
    md["tokenizer.ggml.token_type"] = [*md["tokenizer.ggml.token_type"], 3, 3]
    md["tokenizer.ggml.bos_token_id"] = len(md["tokenizer.ggml.tokens"]) - 2
    del md["tokenizer.ggml.pre"]
    md["tokenizer.chat_template"] = PLACEHOLDER
    return md


def test_the_bitnet_placeholder_template_is_replaced_by_the_trained_format():
    tok = tokenizer_from_gguf(_bitnet_md())
    assert tok.chat_template == BITNET_2B4T_TEMPLATE
    assert tok.pre == "llama-bpe" and not any("missing" in w for w in tok.warnings)
    ids, rendered = tok.apply_chat_template([{"role": "user", "content": "the"}])
    assert rendered.text == "<|begin_of_text|>User: the<|eot_id|>Assistant: "
    assert tok.tokens.index("<|eot_id|>") in tok.stop_ids  # the end of the reply stops generation
    assert ids[0] == tok.bos_id and ids.count(tok.tokens.index("<|eot_id|>")) == 1


def test_other_metadata_is_left_alone():
    md = _tiny_md(**{"tokenizer.chat_template": "{{ messages[0]['content'] }}"})
    assert corrected_metadata(md) is md
    plain = _tiny_md()
    assert corrected_metadata(plain) is plain
