"""PredictionHead: per-cell queries read the VLM tokens, horizon queries set each forecast step (module 6 of 6).

1. Cell state (B, H, W, h), built per cell from
   - the raw input series of the cell (Linear T_in*C_in -> h),
   - the DiX residual: the cell's fused DiX features of every input token, flattened (Linear T_tokens*d -> h;
     T_tokens = T_in / ``temporal_patch``),
   - a 2-D sinusoidal code of the cell (any grid size), projected,
   - optionally a learned cell-identity embedding of the dataset (``cell_embedding``; none for an unknown task),
   - optionally the ViT patch tokens resampled onto the cells (``visual_dim``),
   - the calendar embedding of the first forecast step, so the per-cell MLPs learn cell x time-of-day profiles.
2. Cell queries cross-attend to the VLM output tokens (pre-norm block with MLP), so spatially resolved VLM context
   reaches every cell under every ablation. With ``query_pool`` the queries are the cell states average-pooled to
   at most ``query_pool`` x ``query_pool``, and the attention result is upsampled bilinearly back onto the cells.
   Cost: cells x tokens, linear in the number of cells. Residual MLP layers per cell follow.
3. T_out horizon queries = a learned base + a projected sinusoid of the step (1..T_out) + the calendar embedding
   of the forecast step's timestamp; they cross-attend to the VLM tokens and give a FiLM scale and shift per step
   (zero-initialised: training starts from the unmodulated cell state).
   Without context (``context_dim`` null: ``ablation=no_vlm`` without PromptForge) nothing of 2. is built or run,
   and the horizon queries (width ``hidden_dim``) set the FiLM from the step and its calendar alone, no attention.
4. Per forecast step and cell: FiLM(cell state) + a calendar embedding of that step, ``step_layers`` residual MLP
   layers, and a linear map to the C output channels. With ``step_layers: 0`` the map is linear in the cell state,
   so it is computed as one per-sample, per-step readout matrix and no (B, T_out, H, W, hidden) tensor is built.
5. Optionally (``step_readout``) a linear map of its own per forecast step, from the cell's input series and its
   decoded state, is added, so every step has its own readout from the first update on.
No parameter depends on H x W or T_out; only the input projections depend on T_in (``model.t_in``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlm4st import checks
from vlm4st.errors import ConfigError
from vlm4st.models.calendar import CalendarEmbedding, check_codes
from vlm4st.models.cell_embedding import CellEmbedding
from vlm4st.models.layers import MLP, Block, pool_grid, sincos_1d, sincos_2d
from vlm4st.models.step_readout import StepReadout

KEY = "model.head"


class ResidualMLP(nn.Module):
    """``x + MLP(LN(x))`` repeated ``num_layers`` times on the last axis."""

    def __init__(self, dim: int, num_layers: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = round(dim * mlp_ratio)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_layers))
        self.mlps = nn.ModuleList(MLP(dim, hidden, dropout=dropout) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, mlp in zip(self.norms, self.mlps, strict=True):
            x = x + mlp(norm(x))  # (..., dim)
        return x


class PredictionHead(nn.Module):
    """features (B, T_tok, H, W, d), series (B, T_in, H, W[, C_in]), context (B, N, D) | None ->
    (B, T_out, H, W, C)."""

    def __init__(
        self,
        d_model: int,
        context_dim: int | None,
        t_in: int,
        harmonics: int,
        out_channels: int = 1,
        in_channels: int = 1,
        hidden_dim: int = 64,
        num_heads: int = 4,
        cell_heads: int = 4,
        mlp_ratio: float = 2.0,
        cell_layers: int = 2,
        step_layers: int = 1,
        query_pool: int | None = None,
        visual_dim: int | None = None,
        cell_embedding: CellEmbedding | None = None,
        step_readout: StepReadout | None = None,
        dropout: float = 0.1,
        temporal_patch: int = 1,
    ) -> None:
        super().__init__()
        for key, value in (("d_model", d_model), ("t_in", t_in), ("out_channels", out_channels),
                           ("in_channels", in_channels)):
            checks.positive_int(value, f"{KEY}.{key}")
        hidden_dim = checks.positive_int(hidden_dim, f"{KEY}.hidden_dim")
        if hidden_dim % 4 != 0:
            raise ConfigError(
                f"{KEY}.hidden_dim: {hidden_dim} is not divisible by 4; expected a multiple of 4 (2-D sinusoidal codes)"
            )
        context_dim = checks.optional_positive_int(context_dim, f"{KEY}.context_dim", "no context tokens to read")
        if context_dim is not None and context_dim % 2 != 0:
            raise ConfigError(f"{KEY}.context_dim: {context_dim} is odd; expected an even width (sinusoidal codes)")
        self.query_pool = checks.optional_positive_int(query_pool, f"{KEY}.query_pool", "one query per cell")
        self.visual_dim = checks.optional_positive_int(visual_dim, f"{KEY}.visual_dim", "no ViT patch map")
        if round(hidden_dim * checks.positive_number(mlp_ratio, f"{KEY}.mlp_ratio")) < 1:  # the cell MLPs need a unit
            raise ConfigError(
                f"{KEY}.mlp_ratio: {mlp_ratio} x hidden_dim {hidden_dim} rounds to no hidden unit; expected a ratio "
                f">= {0.5 / hidden_dim:.4g}"
            )
        cell_layers = checks.non_negative_int(cell_layers, f"{KEY}.cell_layers")
        step_layers = checks.non_negative_int(step_layers, f"{KEY}.step_layers")
        dropout = checks.probability(dropout, f"{KEY}.dropout")
        temporal_patch = checks.positive_int(temporal_patch, f"{KEY}.temporal_patch")
        if t_in % temporal_patch:
            raise ConfigError(
                f"{KEY}.temporal_patch: {temporal_patch} does not divide model.t_in = {t_in}; expected a divisor of "
                f"{t_in} (the presets set it through model.dims.temporal_patch)"
            )
        self.d_model, self.context_dim, self.out_channels = d_model, context_dim, out_channels
        self.t_in, self.in_channels, self.hidden_dim = t_in, in_channels, hidden_dim
        self.temporal_patch = temporal_patch
        h = hidden_dim
        # 1. cell state
        self.series = nn.Linear(t_in * in_channels, h)
        self.feature_steps = t_in // temporal_patch  # DiX time tokens
        self.dix = nn.Linear(self.feature_steps * d_model, h)
        self.cell_pos = nn.Linear(h, h, bias=False)
        self.cell_embedding = cell_embedding
        self.cell_id = nn.Linear(cell_embedding.dim, h, bias=False) if cell_embedding is not None else None
        self.visual_proj = nn.Linear(visual_dim, h) if visual_dim is not None else None
        self.cell_calendar = CalendarEmbedding(h, harmonics, key=f"{KEY}.harmonics")
        # 2. cell queries read the VLM tokens (nothing to read without context)
        self.read = None
        if context_dim is not None:
            self.read = Block(h, cell_heads, mlp_ratio, dropout, cross=True, kv_dim=context_dim,
                              heads_key=f"{KEY}.cell_heads", width_key=f"{KEY}.hidden_dim", mlp_key=f"{KEY}.mlp_ratio")
        # The DiX, ViT and VLM-token branches start at zero, so training starts from the direct series / cell /
        # calendar path (quick to fit) and the deep branches grow in as their gradients make them useful, instead
        # of adding large random features to the cell state at initialisation.
        read = () if self.read is None else (self.read.attn.proj, self.read.mlp.fc2)
        for layer in (self.dix, self.visual_proj, *read):
            if layer is not None:
                nn.init.zeros_(layer.weight)
        self.cell_mlp = ResidualMLP(h, cell_layers, mlp_ratio, dropout)
        # 3. horizon queries, of the context's width (the cell state's without context, where they attend nothing)
        q = context_dim if context_dim is not None else h
        self.query_dim = q
        self.query_base = nn.Parameter(torch.randn(1, 1, q) * 0.02)
        self.query_pos = nn.Linear(q, q, bias=False)
        self.query_calendar = CalendarEmbedding(q, harmonics, key=f"{KEY}.harmonics")
        self.horizon = None
        if context_dim is not None:
            self.horizon = Block(q, num_heads, mlp_ratio, dropout, cross=True, heads_key=f"{KEY}.num_heads",
                                 width_key=f"{KEY}.context_dim", mlp_key=f"{KEY}.mlp_ratio")
        self.norm_query = nn.LayerNorm(q)
        self.film = nn.Linear(q, 2 * h)
        nn.init.zeros_(self.film.weight)  # the VLM context starts as no modulation
        nn.init.zeros_(self.film.bias)
        # 4. per step and cell
        self.step_calendar = CalendarEmbedding(h, harmonics, key=f"{KEY}.harmonics")
        self.step_mlp = ResidualMLP(h, step_layers, mlp_ratio, dropout) if step_layers > 0 else None
        self.out = nn.Linear(h, out_channels)
        # 5. a readout per forecast step
        if step_readout is not None:
            sizes = (step_readout.t_in, step_readout.in_channels, step_readout.hidden_dim, step_readout.out_channels)
            if sizes != (t_in, in_channels, hidden_dim, out_channels):
                raise ConfigError(
                    f"{KEY}.step_readout: t_in / in_channels / hidden_dim / out_channels {sizes}; expected the "
                    f"head's {(t_in, in_channels, hidden_dim, out_channels)}"
                )
        self.step_readout = step_readout

    def _visual_map(self, visual: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """ViT tokens (B, 1+P, D) -> patch features on the cell grid (B, H, W, h)."""
        B, N, _ = visual.shape
        g = math.isqrt(N - 1)
        if g * g != N - 1:
            raise ValueError(f"PredictionHead: visual tokens must be 1 CLS + a square patch grid, got {N} tokens")
        patches = self.visual_proj(visual[:, 1:]).transpose(1, 2).reshape(B, self.hidden_dim, g, g)  # (B, h, g, g)
        extra = {"antialias": min(H, W) < g}
        cells = F.interpolate(patches, size=(H, W), mode="bilinear", align_corners=False, **extra)  # (B, h, H, W)
        return cells.permute(0, 2, 3, 1)  # (B, H, W, h)

    def _cell_state(
        self, features, series, task_id, visual, target_timestamps
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The cell state (B, H, W, h) and each cell's flattened input series (B, H, W, T_in*C_in)."""
        B, T, H, W, d = features.shape
        if series.dim() == 4:
            series = series.unsqueeze(-1)  # (B, T_in, H, W, 1)
        expected = (self.feature_steps, self.t_in, self.in_channels)
        if (T, series.shape[1], series.shape[-1]) != expected:
            raise ValueError(
                f"PredictionHead: expected T_in={self.t_in} steps with {self.in_channels} channel(s) (model.t_in) "
                f"and {self.feature_steps} DiX steps; got features {tuple(features.shape)}, "
                f"series {tuple(series.shape)}"
            )
        hist = series.permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)  # (B, H, W, T_in*C_in)
        state = self.series(hist.to(features.dtype))  # (B, H, W, h)
        state = state + self.dix(features.permute(0, 2, 3, 1, 4).reshape(B, H, W, T * d))  # (B, H, W, h)
        pos = self.cell_pos(sincos_2d(H, W, self.hidden_dim, device=features.device).to(state.dtype))  # (HW, h)
        state = state + pos.view(1, H, W, -1)
        if self.cell_embedding is not None:
            ids = self.cell_embedding(task_id, H, W)  # (B, H, W, e), zeros for the unknown task
            state = state + self.cell_id(ids.to(state.dtype))  # (B, H, W, h)
        if visual is not None:
            state = state + self._visual_map(visual, H, W)  # (B, H, W, h)
        if target_timestamps is not None:  # when the forecast starts, so the cell MLP learns cell x time profiles
            state = state + self.cell_calendar(target_timestamps[:, 0]).to(state.dtype)[:, None, None]
        return state, hist  # state not normalised: the series level is the forecast's scale (pre-norm blocks next)

    def _read_context(self, state: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Cell (or pooled-cell) queries cross-attend to the VLM tokens: (B, H, W, h) -> (B, H, W, h)."""
        B, H, W, h = state.shape
        queries = pool_grid(state, self.query_pool)  # (B, h', w', h)
        hq, wq = queries.shape[1:3]
        flat = queries.reshape(B, hq * wq, h)  # (B, h'w', h)
        delta = self.read(flat, context) - flat  # (B, h'w', h)
        if (hq, wq) != (H, W):
            grid = delta.transpose(1, 2).reshape(B, h, hq, wq)  # (B, h, h', w')
            delta = F.interpolate(grid, size=(H, W), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
        return state + delta.reshape(B, H, W, h)  # (B, H, W, h)

    def _horizon(
        self, ref: torch.Tensor, context: torch.Tensor | None, t_out: int, target_timestamps: torch.Tensor | None
    ) -> torch.Tensor:
        """Horizon queries -> FiLM scale and shift (B, T_out, 2h); ``ref`` (the context, or the cell state without
        one) gives the batch size, device and dtype."""
        B = ref.shape[0]
        steps = torch.arange(1, t_out + 1, device=ref.device)
        pos = self.query_pos(sincos_1d(steps, self.query_dim).to(ref.dtype))  # (T_out, q)
        queries = (self.query_base + pos.unsqueeze(0)).expand(B, -1, -1)  # (B, T_out, q)
        if target_timestamps is not None:
            queries = queries + self.query_calendar(target_timestamps).to(queries.dtype)  # (B, T_out, q)
        if self.horizon is not None:
            queries = self.horizon(queries, context)  # (B, T_out, D)
        return self.film(self.norm_query(queries))  # (B, T_out, 2h)

    def forward(
        self,
        features: torch.Tensor,
        series: torch.Tensor,
        context: torch.Tensor | None,
        t_out: int,
        target_timestamps: torch.Tensor | None,
        task_id: torch.Tensor,
        visual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """features (B, T_in, H, W, d); series (B, T_in, H, W[, C_in]); context (B, N, D) iff ``context_dim``;
        target_timestamps (B, T_out, 3) | None; task_id (B,) long (id num_tasks: the unknown task);
        visual (B, 1+P, D) iff ``visual_dim``."""
        B = features.shape[0]
        if (context is None) != (self.read is None):
            raise ValueError(
                "PredictionHead: context tokens must be given exactly when model.head.context_dim is set "
                f"(context_dim={self.context_dim}, context given: {context is not None})"
            )
        if (visual is None) != (self.visual_proj is None):
            raise ValueError(
                "PredictionHead: visual tokens must be given exactly when model.head.visual_dim is set "
                f"(visual_dim={self.visual_dim}, visual given: {visual is not None})"
            )
        if target_timestamps is not None:
            check_codes(target_timestamps, (B, t_out), "target_timestamps")
        # (B, H, W, h) and each cell's input window (B, H, W, T_in*C_in)
        state, hist = self._cell_state(features, series, task_id, visual, target_timestamps)
        if context is not None:
            state = self._read_context(state, context)  # (B, H, W, h)
        state = self.cell_mlp(state)  # (B, H, W, h)
        ref = state if context is None else context
        gamma, beta = self._horizon(ref, context, t_out, target_timestamps).chunk(2, dim=-1)  # (B, T_out, h) each
        if target_timestamps is not None:
            beta = beta + self.step_calendar(target_timestamps).to(beta.dtype)  # (B, T_out, h)
        if self.step_mlp is None:
            pred = self._linear_readout(state, gamma, beta)  # (B, T_out, H, W, C)
        else:
            z = state.unsqueeze(1) * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]  # (B, T_out, H, W, h)
            pred = self.out(self.step_mlp(z))  # (B, T_out, H, W, C)
        if self.step_readout is not None:
            pred = pred + self.step_readout(hist, state, t_out).to(pred.dtype)  # (B, T_out, H, W, C)
        return pred

    def _linear_readout(self, state: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """``out(state * (1 + gamma_j) + beta_j)`` for every step j without materialising (B, T_out, H, W, h).

        state (B, H, W, h); gamma, beta (B, T_out, h) -> (B, T_out, H, W, C): a per-sample, per-step linear map of
        the cell state whose weights the VLM context and the forecast calendar modulate.
        """
        B, H, W, h = state.shape
        weight = self.out.weight.to(state.dtype)  # (C, h)
        scale = (1 + gamma).unsqueeze(-1) * weight.t()  # (B, T_out, h, C)
        cells = torch.einsum("bnh,bthc->btnc", state.reshape(B, H * W, h), scale)  # (B, T_out, HW, C)
        shift = beta @ weight.t() + self.out.bias.to(state.dtype)  # (B, T_out, C)
        return (cells + shift[:, :, None]).reshape(B, -1, H, W, weight.shape[0])  # (B, T_out, H, W, C)
