"""Model-file loading: the hardened GGUF reader, a GGUF writer and dequantization.

Imports numpy and the standard library only: no Qt, no app code, no `gguf` package.
"""
