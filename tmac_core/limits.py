"""Sane upper bounds on a model's hyperparameters, shared by every config reader (GGUF keys in
tmac_core/config.py, Hugging Face config.json in tmac_core/loading/hf.py): far above any real
model, far below what overflows a buffer. Standard library only."""

MAX_DIM = 1 << 16
MAX_HIDDEN_DIM = 1 << 20
MAX_LAYERS = 1024
MAX_HEADS = 1024
MAX_HEAD_DIM = 1024
MAX_VOCAB = 1 << 22
MAX_SEQ_LEN = 1 << 24
MIN_SEQ_LEN = 16  # the engine's smallest context (Engine.load refuses a smaller n_ctx)
