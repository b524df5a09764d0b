"""Model catalog, downloads and installed models. Pure Python: must not import PySide6; of
tmac_core only the numpy-free plan, types and architecture registry, plus inspect_model
from worker threads."""
