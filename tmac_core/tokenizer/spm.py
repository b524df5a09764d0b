"""SentencePiece tokenizer (GGUF `tokenizer.ggml.model = "llama"`: Llama-1/2, Mistral, TinyLlama).

GGUF keeps a SentencePiece vocabulary as three parallel lists (tokens, scores, types);
we rebuild a ModelProto from them and load it with `sentencepiece`. The model type is
BPE (merge the adjacent pair whose result has the best score), as llama.cpp's
`llm_tokenizer_spm` does. Two deliberate changes from the original model: the dummy
space prefix is added here, not by SentencePiece, so that it follows llama.cpp's rule
(before the first text fragment and after every special token); and user-defined tokens
are UNUSED in the proto so typed text never produces them (the base class matches them
in trusted text only). No Qt, no `app`, no GGUF reader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tmac_core.errors import TokenizerError
from tmac_core.tokenizer.base import (
    BYTE,
    CONTROL,
    NORMAL,
    UNKNOWN,
    UNUSED,
    USER_DEFINED,
    Metadata,
    Tokenizer,
    has_surrogates,
)

_SPACE = "\u2581"  # SentencePiece's visible space, "▁"
_UNK_SURFACE = " \u2047 "  # what SentencePiece decodes <unk> to (" ⁇ ")


def _byte_value(piece: str) -> int | None:
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return int(piece[3:5], 16)
        except ValueError:
            return None
    return None


class SpmTokenizer(Tokenizer):
    """SentencePiece BPE through `sentencepiece`."""

    model = "llama"

    def __init__(self, md: Mapping[str, Any], path: str = "model metadata"):
        super().__init__(md, path)
        meta = Metadata(md, path)
        scores = meta.get_numbers("tokenizer.ggml.scores", integers=False)
        if scores is not None and len(scores) != len(self.tokens):
            raise TokenizerError(f"tokenizer.ggml.scores has {len(scores)} entries for {len(self.tokens)} tokens")
        # float32 range: SentencePiece stores scores as float and would make a larger one inf
        if scores is not None and len(scores) and np.abs(scores).max() > np.finfo(np.float32).max:
            meta.fail("tokenizer.ggml.scores", "a score is outside the float32 range")
        self.scores: list[float] = [0.0] * len(self.tokens) if scores is None else scores.tolist()
        self.add_space_prefix = meta.get_bool("tokenizer.ggml.add_space_prefix", True)
        remove_ws = meta.get_bool("tokenizer.ggml.remove_extra_whitespaces", False)
        # SentencePiece would trim the space we prepend when it removes extra whitespace,
        # so in that (rare) mode it adds the prefix itself.
        self._prepend_space = self.add_space_prefix and not remove_ws
        self._sp = self._load(self._build_proto(remove_ws))

        self._bytes: list[bytes] = []
        self._lstrip: list[bool] = []
        for text, ttype in zip(self.tokens, self.token_types):
            value = _byte_value(text) if ttype == BYTE else None
            if value is not None:
                self._bytes.append(bytes([value]))
            elif ttype in (NORMAL, USER_DEFINED):
                self._bytes.append(text.replace(_SPACE, " ").encode("utf-8", "surrogateescape"))
            elif ttype == UNKNOWN:
                self._bytes.append(_UNK_SURFACE.encode("utf-8"))
            else:
                self._bytes.append(b"")
            # SentencePiece drops the "▁" that starts the first decoded normal piece.
            self._lstrip.append(self.add_space_prefix and ttype == NORMAL and text.startswith(_SPACE))

    def _default_add_bos(self) -> bool:
        return True  # llama.cpp's default for SPM vocabularies

    def _build_proto(self, remove_extra_whitespaces: bool) -> bytes:
        from sentencepiece import sentencepiece_model_pb2 as pb

        proto = pb.ModelProto()
        proto.trainer_spec.model_type = pb.TrainerSpec.BPE
        proto.trainer_spec.vocab_size = len(self.tokens)
        norm = proto.normalizer_spec
        # llama.cpp applies no Unicode normalization to SPM input; neither do we.
        norm.name = "identity"
        norm.add_dummy_prefix = self.add_space_prefix and not self._prepend_space
        norm.remove_extra_whitespaces = remove_extra_whitespaces
        norm.escape_whitespaces = True

        # SentencePiece needs exactly one UNKNOWN piece.
        unk = (
            self.unk_id
            if self.unk_id is not None and self.token_types[self.unk_id] == UNKNOWN
            else next((i for i, t in enumerate(self.token_types) if t == UNKNOWN), self.unk_id)
        )
        if unk is None:
            raise TokenizerError("SentencePiece vocabulary has no unknown token")
        seen: set[str] = set()
        byte_pieces = 0
        for i, (text, ttype, score) in enumerate(zip(self.tokens, self.token_types, self.scores)):
            if i == unk:
                kind = UNKNOWN
            elif ttype in (USER_DEFINED, UNKNOWN):
                kind = UNUSED
            elif ttype == BYTE and _byte_value(text) is None:
                self.warnings.append(f"token {i} {text!r} has type byte but is not <0xNN>")
                kind = UNUSED
            elif ttype in (NORMAL, CONTROL, BYTE, UNUSED):
                kind = ttype
            else:
                kind = NORMAL
            if not text or text in seen or has_surrogates(text):
                # SentencePiece refuses empty and duplicate pieces and cannot hold non-UTF-8
                # ones; the id must stay, so give it a unique name nobody can type and never
                # use it for encoding (its bytes still decode, see __init__).
                if not has_surrogates(text):
                    self.warnings.append(f"token {i} is empty or a duplicate; never produced")
                text, kind = f"\ufdd1{i}", (UNKNOWN if i == unk else UNUSED)
            seen.add(text)
            byte_pieces += kind == BYTE
            piece = proto.pieces.add()
            piece.piece, piece.score, piece.type = text, score, kind
        proto.trainer_spec.byte_fallback = byte_pieces == 256
        if 0 < byte_pieces < 256:
            # SentencePiece refuses byte pieces without byte fallback.
            self.warnings.append(f"only {byte_pieces} of 256 byte tokens; byte fallback is off")
            for piece in proto.pieces:
                if piece.type == BYTE:
                    piece.type = UNUSED
        proto.trainer_spec.unk_id = unk
        proto.trainer_spec.bos_id = -1 if self.bos_id is None else self.bos_id
        proto.trainer_spec.eos_id = -1 if self.eos_id is None else self.eos_id
        proto.trainer_spec.pad_id = -1 if self.pad_id is None else self.pad_id
        return proto.SerializeToString()

    @staticmethod
    def _load(model_proto: bytes) -> Any:
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(model_proto)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError with C++ text
            raise TokenizerError(f"sentencepiece rejected the vocabulary: {e}") from e
        return sp

    def _encode_fragments(self, fragments: Sequence[str | int]) -> list[int]:
        # llama.cpp (llama_vocab::impl::tokenize, SPM case): a space is put before the
        # first text fragment and before any fragment that follows a special token.
        ids: list[int] = []
        prev_special = True
        for f in fragments:
            if isinstance(f, int):
                ids.append(f)
                prev_special = True
                continue
            if self._prepend_space and prev_special:
                f = " " + f
            ids.extend(self._sp.EncodeAsIds(f))
            prev_special = False
        return ids

    def strips_leading_space(self, token_id: int) -> bool:
        return self._lstrip[token_id]
