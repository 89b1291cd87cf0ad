"""Standard SFT on MLX: every trainable parameter (LoRA through mlx-lm, or full) updates every step.

The base class already is plain sequential fine-tuning; this names it, with the torch ``sft`` options.
"""

from __future__ import annotations

from clbench.backends.mlx.strategy import MLXStrategy


class SFT(MLXStrategy):
    """Standard SFT: all trainable parameters (LoRA or full) update every step."""
