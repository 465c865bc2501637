"""DualPathFormatTransformer: fused spatiotemporal features -> the VLM's inputs (module 4 of 6).

- image path (``ImageProjector``): (B, 3, S, S), S = the VLM's image size, passed in by the model;
- sequence path (``SequenceResampler``): (B, L, D) = [CLS?, PROMPT?, latents]; every token is real (no padding),
  so no attention mask is passed on (a mask of ones would only slow the fused attention kernels down).
Either path may be absent (``no_seq``: image only; ``no_visual``: sequence only); an absent path is neither built
nor computed, so an ablation costs nothing for the path it removes. The PROMPT token (a ``PromptToken``
projection of PromptForge's output) exists only when PromptForge does (``prompt_dim`` set). Without a sequence
path the token is returned on its own, and the model hands it to the prediction head as an extra context token,
so ``no_seq`` removes the sequence path but keeps the prompt (the prompt would otherwise be lost with the
sequence).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vlm4st import checks
from vlm4st.errors import ConfigError
from vlm4st.models.format_image import ImageProjector
from vlm4st.models.format_sequence import SequenceResampler
from vlm4st.models.prompt_token import PromptToken


@dataclass
class FormatOutput:
    """image (B, 3, S, S) | None; sequence (B, L, D) | None; prompt_token (B, 1, D) | None (the PROMPT token, also
    inside ``sequence`` when a sequence path exists)."""

    image: torch.Tensor | None
    sequence: torch.Tensor | None
    prompt_token: torch.Tensor | None


class DualPathFormatTransformer(nn.Module):
    """Image and/or sequence path; see the module docstring."""

    def __init__(
        self,
        image: ImageProjector | None,
        sequence: SequenceResampler | None,
        out_dim: int,
        prompt_dim: int | None = None,
        use_cls: bool = True,
    ) -> None:
        super().__init__()
        out_dim = checks.positive_int(out_dim, "model.format_transformer.out_dim")
        if image is None and sequence is None:
            raise ConfigError(
                "model.format_transformer: both image and sequence are null; at least one path must exist"
            )
        if sequence is not None and sequence.out_dim != out_dim:
            raise ConfigError(
                f"model.format_transformer.sequence.out_dim ({sequence.out_dim}) must equal "
                f"model.format_transformer.out_dim ({out_dim})"
            )
        self.image = image
        self.sequence = sequence
        self.out_dim = out_dim
        self.prompt_dim = checks.optional_positive_int(prompt_dim, "model.format_transformer.prompt_dim", "no prompt")
        use_cls = checks.flag(use_cls, "model.format_transformer.use_cls")
        self.cls = nn.Parameter(torch.randn(1, 1, out_dim) * 0.02) if use_cls and sequence is not None else None
        self.prompt_proj = PromptToken(prompt_dim, out_dim) if prompt_dim is not None else None

    def num_tokens(self) -> int:
        """Sequence length L (0 without a sequence path)."""
        if self.sequence is None:
            return 0
        return self.sequence.num_latents + int(self.cls is not None) + int(self.prompt_proj is not None)

    def forward(
        self, x: torch.Tensor, image_size: int | None = None, prompt: torch.Tensor | None = None
    ) -> FormatOutput:
        """x (B, T, H, W, d); image_size S (required with an image path); prompt (B, P) iff ``prompt_dim`` set."""
        if (prompt is None) != (self.prompt_proj is None):
            raise ValueError(
                "DualPathFormatTransformer: a prompt must be given exactly when model.format_transformer.prompt_dim "
                "is set "
                f"(prompt_dim={self.prompt_dim}, prompt given: {prompt is not None})"
            )
        B = x.shape[0]
        image = None
        if self.image is not None:
            if image_size is None:
                raise ValueError("DualPathFormatTransformer: the image path needs image_size (the VLM's image size)")
            image = self.image(x, image_size)  # (B, 3, S, S)
        prompt_token = None if prompt is None else self.prompt_proj(prompt)  # (B, 1, D)
        sequence = None
        if self.sequence is not None:
            parts = [] if self.cls is None else [self.cls.expand(B, -1, -1)]  # (B, 1, D)
            if prompt_token is not None:
                parts.append(prompt_token)
            parts.append(self.sequence(x))  # (B, n, D)
            sequence = torch.cat(parts, dim=1)  # (B, L, D)
        return FormatOutput(image, sequence, prompt_token)
