"""PromptToken: PromptForge's output (B, P) -> one token (B, 1, D) of the VLM's (or the head's context) width.

The format transformer holds one for the PROMPT token of the VLM's sequence. Under ``ablation=no_vlm`` there is
no format transformer, and the model holds one (``model.prompt_token``): its token is then the prediction head's
only context.
"""

from __future__ import annotations

import torch
from torch import nn

from vlm4st import checks

KEY = "model.prompt_token"


class PromptToken(nn.Sequential):
    """Linear(P -> D) then LayerNorm(D), returned as one token.

    Args:
        in_dim: P, PromptForge's output width (its ``out_dim``).
        out_dim: D, the width of the token.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        in_dim = checks.positive_int(in_dim, f"{KEY}.in_dim")
        out_dim = checks.positive_int(out_dim, f"{KEY}.out_dim")
        super().__init__(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim))
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, prompt: torch.Tensor) -> torch.Tensor:
        """prompt (B, P) -> (B, 1, D)."""
        return super().forward(prompt).unsqueeze(1)  # (B, 1, D)
