"""Model architectures, registered in one explicit dict (PyInstaller cannot see
dynamic imports). A new architecture is one file, one line here, one test."""
from tmac_core.errors import UnsupportedModelError
from tmac_core.models import llama

ARCHITECTURES = {
    "llama": llama,      # Llama 2/3/3.2, SmolLM2, TinyLlama, Mistral (same graph)
    "qwen2": llama,      # + q/k/v biases and neox RoPE, switched by ModelConfig
}


def get_architecture(arch: str):
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise UnsupportedModelError(
            f"model architecture {arch!r} is not supported (supported: {', '.join(sorted(ARCHITECTURES))})"
        ) from None
