"""DiX-Attention: temporal, spatial and bidirectional cross attention over the grid series (module 1 of 6).

The branches run on a token grid: the cells, or with ``spatial_patch`` p > 1 blocks of p x p cells (the embedding
averaged over the block), the spatial counterpart of the embedding's ``temporal_patch``. Every DiX layer's cost
scales with the number of tokens, so p = 2 makes the branches and their fusion about four times cheaper, while
each cell keeps its own embedding: the fused result is added back per cell (``STFeatures.to_cells``).

Branches, all from the embedded input X_input on the token grid (B, T, h, w, d), which carries spatial, temporal
and calendar positions (see ``input_projection``):
- temporal: one sequence per cell over the T steps plus a learned CLS token; pre-norm transformer blocks.
  Summary c_t = CLS outputs averaged over cells.
- spatial: per frame, every cell (and a CLS token) attends to the frame average-pooled to at most
  ``spatial_pool`` x ``spatial_pool`` tokens plus the CLS token (spatial-reduction attention: cost linear in the
  number of cells, any grid size). Summary c_s = CLS outputs averaged over frames.
- cross (bidirectional): per frame, [CLS_ts, mean of the temporal features] attend to the spatial features
  pooled to ``cross_pool`` x ``cross_pool``; per cell, [CLS_st, mean over time of the spatial features] attend to
  that cell's T temporal features. Both attentions project keys and values, so every head reads a projection
  of all channels rather than a slice of them. The cost stays small: temporal -> spatial keys are pooled to at
  most ``cross_pool`` x ``cross_pool`` per frame, and spatial -> temporal keys are each cell's T steps (one
  d -> 2d projection of the temporal features, the cost of a single per-token linear layer). The frame
  result (B, T, d) and the cell result (B, H, W, d) are projected and broadcast-added (the same as a Linear on
  their concatenation, without materialising it), then an MLP and a residual to X_temporal + X_spatial.
  Summary c_x = the mean of both CLS outputs.
Dropout sits on residual branches only (attention outputs, MLP outputs), never on attention probabilities, so
the fused attention kernels always apply.
Summaries are returned, never cached on the module. With ``summaries=False`` (nothing reads them, e.g. without
PromptForge) none is computed and ``STFeatures.summaries`` is empty: the cross CLS queries are not built (each
query attends on its own, so the other queries' outputs do not change); the temporal and spatial CLS tokens
stay, because the steps and the cells attend to them, and only their summary reductions are skipped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlm4st import checks
from vlm4st.errors import ConfigError
from vlm4st.models.input_projection import InputEmbedding, STFeatures
from vlm4st.models.layers import MLP, Attention, Block, pool_grid, pool_patches

#: Config keys the DiX blocks name when a size does not fit.
HEADS_KEY, WIDTH_KEY, MLP_KEY = "model.dix.num_heads", "model.dix.d_model", "model.dix.mlp_ratio"


def _cls_token(d_model: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(1, 1, d_model) * 0.02)


class TemporalEncoder(nn.Module):
    """Self-attention over time, one sequence per cell: (B, T, H, W, d) -> features, CLS per cell (B, H, W, d)."""

    def __init__(self, d_model: int, num_heads: int, num_layers: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.cls = _cls_token(d_model)
        self.blocks = nn.ModuleList(
            Block(d_model, num_heads, mlp_ratio, dropout, heads_key=HEADS_KEY, width_key=WIDTH_KEY, mlp_key=MLP_KEY)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, H, W, d = x.shape
        seq = x.permute(0, 2, 3, 1, 4).reshape(B * H * W, T, d)  # (BHW, T, d)
        seq = torch.cat([self.cls.expand(B * H * W, 1, d), seq], dim=1)  # (BHW, 1+T, d)
        for block in self.blocks:
            seq = block(seq)  # (BHW, 1+T, d)
        seq = self.norm(seq)
        cls = seq[:, 0].view(B, H, W, d)  # (B, H, W, d)
        out = seq[:, 1:].view(B, H, W, T, d).permute(0, 3, 1, 2, 4)  # (B, T, H, W, d)
        return out, cls


class PooledSpatialBlock(nn.Module):
    """Pre-norm block where every cell and the CLS token attend to [CLS, frame pooled to ``pool`` x ``pool``]."""

    def __init__(self, d_model: int, num_heads: int, mlp_ratio: float, dropout: float, pool: int | None) -> None:
        super().__init__()
        self.pool = pool
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, num_heads, cross=True, heads_key=HEADS_KEY, width_key=WIDTH_KEY)
        self.drop = nn.Dropout(dropout)
        hidden = round(d_model * checks.non_negative_number(mlp_ratio, MLP_KEY))
        self.norm2 = nn.LayerNorm(d_model) if hidden > 0 else None
        self.mlp = MLP(d_model, hidden, dropout=dropout) if hidden > 0 else None

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """x (N, 1 + H*W, d) with the CLS token first; ``grid`` = (H, W)."""
        N, _, d = x.shape
        H, W = grid
        h = self.norm1(x)  # (N, 1+HW, d)
        pooled = pool_grid(h[:, 1:].reshape(N, H, W, d), self.pool).reshape(N, -1, d)  # (N, P, d)
        kv = torch.cat([h[:, :1], pooled], dim=1)  # (N, 1+P, d)
        x = x + self.drop(self.attn(h, kv))  # (N, 1+HW, d)
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))  # (N, 1+HW, d)
        return x


class SpatialEncoder(nn.Module):
    """Attention over cells, one sequence per frame: (B, T, H, W, d) -> features, CLS per frame (B, T, d)."""

    def __init__(
        self, d_model: int, num_heads: int, num_layers: int, mlp_ratio: float, dropout: float, pool: int | None
    ) -> None:
        super().__init__()
        self.cls = _cls_token(d_model)
        self.blocks = nn.ModuleList(
            PooledSpatialBlock(d_model, num_heads, mlp_ratio, dropout, pool) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, H, W, d = x.shape
        seq = torch.cat([self.cls.expand(B * T, 1, d), x.reshape(B * T, H * W, d)], dim=1)  # (BT, 1+HW, d)
        for block in self.blocks:
            seq = block(seq, (H, W))  # (BT, 1+HW, d)
        seq = self.norm(seq)
        cls = seq[:, 0].view(B, T, d)  # (B, T, d)
        return seq[:, 1:].reshape(B, T, H, W, d), cls  # (B, T, H, W, d)


class CrossExchange(nn.Module):
    """Bidirectional temporal<->spatial attention: (X_temporal, X_spatial) -> X_cross (B, T, H, W, d), c_x (B, d).

    With ``summary=False`` the CLS queries are not built and c_x is None; X_cross is unchanged.
    """

    def __init__(
        self, d_model: int, num_heads: int, mlp_ratio: float, dropout: float, pool: int | None, summary: bool = True
    ) -> None:
        super().__init__()
        hidden = round(d_model * checks.positive_number(mlp_ratio, "model.dix.cross_mlp_ratio"))
        if hidden < 1:
            raise ConfigError(
                f"model.dix.cross_mlp_ratio: {mlp_ratio} x d_model {d_model} rounds to no hidden unit; expected a "
                f"ratio >= {0.5 / d_model:.4g}"
            )
        self.pool = pool
        self.cls_ts = _cls_token(d_model) if summary else None
        self.cls_st = _cls_token(d_model) if summary else None
        self.norm_t = nn.LayerNorm(d_model)
        self.norm_s = nn.LayerNorm(d_model)
        keys = {"heads_key": HEADS_KEY, "width_key": WIDTH_KEY}
        self.t2s = Attention(d_model, num_heads, cross=True, **keys)  # keys: the frame pooled to <= pool x pool
        self.s2t = Attention(d_model, num_heads, cross=True, **keys)  # keys: the T steps of one cell
        # Linear(2d -> hidden) on concat(frame result, cell result), split so each half runs at low resolution.
        self.fc1_frame = nn.Linear(d_model, hidden)
        self.fc1_cell = nn.Linear(d_model, hidden, bias=False)
        self.norm_mid = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, d_model)
        self.drop = nn.Dropout(dropout)
        self.norm_out = nn.LayerNorm(d_model)

    @staticmethod
    def _queries(cls: nn.Parameter | None, mean: torch.Tensor) -> torch.Tensor:
        """[CLS, mean] per sequence, or [mean] alone without a summary: (N, 1, d) -> (N, 1 or 2, d)."""
        if cls is None:
            return mean
        return torch.cat([cls.expand(mean.shape[0], 1, mean.shape[-1]), mean], dim=1)  # (N, 2, d)

    def forward(self, xt: torch.Tensor, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, H, W, d = xt.shape
        at, as_ = self.norm_t(xt), self.norm_s(xs)  # (B, T, H, W, d) each
        # temporal -> spatial, one query (pair) per frame; the mean query is last
        q = self._queries(self.cls_ts, at.mean(dim=(2, 3)).reshape(B * T, 1, d))  # (BT, Q, d), Q = 1 or 2
        kv = pool_grid(as_.reshape(B * T, H, W, d), self.pool).reshape(B * T, -1, d)  # (BT, P, d)
        ts = self.t2s(q, kv).view(B, T, -1, d)  # (B, T, Q, d)
        # spatial -> temporal, one query (pair) per cell
        q = self._queries(self.cls_st, as_.mean(dim=1).reshape(B * H * W, 1, d))  # (BHW, Q, d)
        kv = at.permute(0, 2, 3, 1, 4).reshape(B * H * W, T, d)  # (BHW, T, d)
        st = self.s2t(q, kv).view(B, H, W, -1, d)  # (B, H, W, Q, d)
        mid = self.fc1_frame(ts[:, :, -1])[:, :, None, None] + self.fc1_cell(st[..., -1, :])[:, None]  # (B,T,H,W,hid)
        mixed = self.drop(self.fc2(F.gelu(self.norm_mid(mid))))  # (B, T, H, W, d)
        x_cross = self.norm_out(mixed + xt + xs)  # (B, T, H, W, d)
        if self.cls_ts is None:
            return x_cross, None
        summary = 0.5 * (ts[:, :, 0].mean(dim=1) + st[..., 0, :].mean(dim=(1, 2)))  # (B, d)
        return x_cross, summary


class DiXAttention(nn.Module):
    """Temporal, spatial and cross branches over the embedded grid series; see the module docstring.

    ``forward(x (B, T, H, W), timestamps (B, T, 3) | None)`` -> ``STFeatures`` with X_input (B, T, H, W, d),
    X_temporal, X_spatial, X_cross on the token grid (B, T, h, w, d) (h = ceil(H / spatial_patch)) and summaries
    ``temporal``, ``spatial``, ``cross`` (B, d), or no summaries with ``summaries=False`` (then ``summary_names``
    is empty).
    """

    branch_names: tuple[str, ...] = ("temporal", "spatial", "cross", "input")
    SUMMARY_NAMES: tuple[str, ...] = ("temporal", "spatial", "cross")

    def __init__(
        self,
        d_model: int,
        harmonics: int,
        num_heads: int = 8,
        num_layers: int = 1,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
        spatial_pool: int | None = 8,
        cross_pool: int | None = 7,
        cross_mlp_ratio: float = 1.0,
        in_channels: int = 1,
        summaries: bool = True,
        temporal_patch: int = 1,
        spatial_patch: int = 1,
    ) -> None:
        super().__init__()
        self.spatial_patch = checks.positive_int(spatial_patch, "model.dix.spatial_patch")
        self.summaries = checks.flag(summaries, "model.dix.summaries")
        self.summary_names: tuple[str, ...] = self.SUMMARY_NAMES if summaries else ()
        self.embed = InputEmbedding(d_model, harmonics, in_channels, dropout, temporal_patch)  # checks d_model
        self.d_model = self.embed.d_model
        checks.num_heads(num_heads, d_model, HEADS_KEY, WIDTH_KEY)
        num_layers = checks.positive_int(num_layers, "model.dix.num_layers")
        spatial_pool = checks.optional_positive_int(spatial_pool, "model.dix.spatial_pool", "no pooling")
        cross_pool = checks.optional_positive_int(cross_pool, "model.dix.cross_pool", "no pooling")
        self.grad_checkpointing = False
        self.temporal = TemporalEncoder(d_model, num_heads, num_layers, mlp_ratio, dropout)
        self.spatial = SpatialEncoder(d_model, num_heads, num_layers, mlp_ratio, dropout, spatial_pool)
        self.cross = CrossExchange(d_model, num_heads, cross_mlp_ratio, dropout, cross_pool, summary=summaries)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each branch in backward (saves the (B, T, H, W, d) activations inside the branches)."""
        self.grad_checkpointing = enable

    def _run(self, fn: nn.Module, *args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def forward(self, x: torch.Tensor, timestamps: torch.Tensor | None = None) -> STFeatures:
        x_input = self.embed(x, timestamps)  # (B, T, H, W, d)
        tokens = pool_patches(x_input, self.spatial_patch)  # (B, T, h, w, d)
        x_temporal, cls_t = self._run(self.temporal, tokens)  # (B, T, h, w, d), (B, h, w, d)
        x_spatial, cls_s = self._run(self.spatial, tokens)  # (B, T, h, w, d), (B, T, d)
        x_cross, c_x = self._run(self.cross, x_temporal, x_spatial)  # (B, T, h, w, d), (B, d) | None
        summaries = {}
        if self.summaries:
            summaries = {"temporal": cls_t.mean(dim=(1, 2)), "spatial": cls_s.mean(dim=1), "cross": c_x}  # (B, d)
        patched = tokens if self.spatial_patch > 1 else None
        return STFeatures(x_input, x_temporal, x_spatial, x_cross, summaries, patched, self.spatial_patch)
