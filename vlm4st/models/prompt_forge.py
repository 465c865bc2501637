"""PromptForge: hierarchical coarse/fine prototype memories that turn summary vectors into a prompt (module 2 of 6).

One memory per modality (``temporal``, ``spatial``, ``cross``; ``input`` under ``no_dix``), each with K coarse
prototypes and K x M fine prototypes. For a summary vector s (B, d):
1. q = normalize(LN(W_q s)).
2. Coarse weights c = softmax(cos(q, P_c) / temperature), (B, K).
3. Soft top-p selection, differentiable and free of host syncs (a hard top-p cut, found by a Python loop over
   ``.item()`` values, would pass no gradient to the dropped groups and stall the device on every sample): for
   each group k, m_k = sigmoid((threshold - mass_k) / mask_temperature) where mass_k is the total weight of the
   groups ranked above k. The top group is always kept (mass 0); groups
   past the ``threshold`` mass fade out. c <- c * m / sum(c * m) (renormalised). ``threshold: null`` keeps all.
4. Fine weights f = softmax(cos(q, P_f[k]) / temperature) over M, for every group at once, (B, K, M).
5. w = c[:, :, None] * f sums to 1 per sample; prompt = sum_{k,m} w_{km} * W_p P_f[k, m], (B, p) with
   p = prompt_dim / n (``prompt_dim`` is the total width, so ``no_dix``'s single memory keeps the same width).
All memories are stacked into batched parameters, so one einsum serves every sample, group and modality.
The prompts are concatenated (B, n*p) and refined: LN(B0 + MLP(B0)).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlm4st import checks
from vlm4st.errors import ConfigError

KEY = "model.prompt_forge"


@dataclass(frozen=True)
class PatternWeights:
    """One memory's weights for a batch: the renormalised coarse weights after selection and the fine weights
    within each group (for visualisation)."""

    coarse: torch.Tensor  # (B, K)
    fine: torch.Tensor  # (B, K, M)


#: Pattern weights per modality (``temporal``, ``spatial``, ``cross``; ``input`` under ``no_dix``).
PatternInfo = dict[str, PatternWeights]


class PromptForge(nn.Module):
    """Summaries {name: (B, d)} -> prompt (B, prompt_dim) and pattern weights per modality.

    ``pattern_info[name]`` holds that memory's coarse (B, K) and fine (B, K, M) weights.
    """

    def __init__(
        self,
        d_model: int,
        modalities: Sequence[str] = ("temporal", "spatial", "cross"),
        num_coarse: int = 5,
        num_fine: int = 2,
        prompt_dim: int = 128,
        temperature: float = 0.5,
        threshold: float | None = 0.9,
        mask_temperature: float = 0.05,
        hidden_dim: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        names = isinstance(modalities, Sequence) and not isinstance(modalities, str)
        if not names or not all(isinstance(m, str) for m in modalities):
            raise ConfigError(f"{KEY}.modalities: expected a list of summary names, got {modalities!r}")
        modalities = tuple(modalities)
        if not modalities or len(set(modalities)) != len(modalities):
            raise ConfigError(f"{KEY}.modalities: expected distinct names, got {list(modalities)}")
        d_model = checks.positive_int(d_model, f"{KEY}.d_model")
        self.temperature = checks.positive_number(temperature, f"{KEY}.temperature")
        self.mask_temperature = checks.positive_number(mask_temperature, f"{KEY}.mask_temperature")
        in_range = isinstance(threshold, int | float) and not isinstance(threshold, bool) and 0.0 < threshold <= 1.0
        if threshold is not None and not in_range:
            raise ConfigError(f"{KEY}.threshold: expected a value in (0, 1] or null (keep all), got {threshold!r}")
        prompt_dim = checks.positive_int(prompt_dim, f"{KEY}.prompt_dim")
        if prompt_dim % len(modalities) != 0:
            raise ConfigError(
                f"{KEY}.prompt_dim: {prompt_dim} (total width) is not divisible by the number of modalities "
                f"{len(modalities)}; expected a multiple of {len(modalities)}"
            )
        for key, value in (("num_coarse", num_coarse), ("num_fine", num_fine)):
            if checks.positive_int(value, f"{KEY}.{key}") > d_model:
                raise ConfigError(
                    f"{KEY}.{key}: {value} exceeds d_model {d_model}; expected at most {d_model} (the prototypes are "
                    "initialised orthogonal)"
                )
        hidden_dim = checks.positive_int(hidden_dim, f"{KEY}.hidden_dim")
        dropout = checks.probability(dropout, f"{KEY}.dropout")
        n, K, M, d = len(modalities), num_coarse, num_fine, d_model
        p = prompt_dim // n
        self.modalities = modalities
        self.threshold = None if threshold is None else float(threshold)
        self.out_dim = n * p

        self.query_weight = nn.Parameter(torch.empty(n, d, d))  # (n, d_in, d_out)
        self.query_bias = nn.Parameter(torch.zeros(n, d))
        self.norm_weight = nn.Parameter(torch.ones(n, d))
        self.norm_bias = nn.Parameter(torch.zeros(n, d))
        self.coarse = nn.Parameter(torch.empty(n, K, d))
        self.fine = nn.Parameter(torch.empty(n, K, M, d))
        self.prompt_weight = nn.Parameter(torch.empty(n, d, p))  # (n, d_in, p)
        self.prompt_bias = nn.Parameter(torch.zeros(n, p))
        self.mlp = nn.Sequential(
            nn.Linear(n * p, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, n * p),
        )
        self.norm_out = nn.LayerNorm(n * p)
        self._init_memories()

    @torch.no_grad()
    def _init_memories(self) -> None:
        n, K, _, d = self.fine.shape
        bound_q = 1.0 / math.sqrt(d)
        for i in range(n):  # init only: orthogonal prototypes per memory and per coarse group
            nn.init.orthogonal_(self.coarse[i])
            for k in range(K):
                nn.init.orthogonal_(self.fine[i, k])
            nn.init.uniform_(self.query_weight[i], -bound_q, bound_q)
            nn.init.uniform_(self.prompt_weight[i], -bound_q, bound_q)

    def _select(self, c: torch.Tensor) -> torch.Tensor:
        """Soft top-p mask and renormalisation of coarse weights c (B, n, K) -> (B, n, K)."""
        if self.threshold is None:
            return c
        K = c.shape[-1]
        idx = torch.arange(K, device=c.device)
        cj, ck = c.unsqueeze(-2), c.unsqueeze(-1)  # (B, n, 1, K) other group j, (B, n, K, 1) group k
        ranked_above = (cj > ck) | ((cj == ck) & (idx[None, :] < idx[:, None]))  # (B, n, K, K): j ranks above k
        mass_above = (ranked_above.to(c.dtype) * cj).sum(dim=-1)  # (B, n, K)
        keep = torch.sigmoid((self.threshold - mass_above) / self.mask_temperature)  # (B, n, K)
        kept = c * keep
        return kept / kept.sum(dim=-1, keepdim=True)  # (B, n, K)

    def forward(self, summaries: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, PatternInfo]:
        missing = [m for m in self.modalities if m not in summaries]
        if missing:
            raise ValueError(
                f"PromptForge: summaries {sorted(summaries)} lack {missing} (model.prompt_forge.modalities)"
            )
        s = torch.stack([summaries[m] for m in self.modalities], dim=1)  # (B, n, d)
        B, _, d = s.shape
        q = torch.einsum("bnd,nde->bne", s, self.query_weight) + self.query_bias  # (B, n, d)
        q = F.layer_norm(q, (d,)) * self.norm_weight + self.norm_bias
        q = F.normalize(q, dim=-1)  # (B, n, d)
        coarse_sim = torch.einsum("bnd,nkd->bnk", q, F.normalize(self.coarse, dim=-1))  # (B, n, K)
        c = self._select(torch.softmax(coarse_sim / self.temperature, dim=-1))  # (B, n, K)
        fine_sim = torch.einsum("bnd,nkmd->bnkm", q, F.normalize(self.fine, dim=-1))  # (B, n, K, M)
        f = torch.softmax(fine_sim / self.temperature, dim=-1)  # (B, n, K, M)
        w = c.unsqueeze(-1) * f  # (B, n, K, M), sums to 1 over (K, M)
        values = torch.einsum("nkmd,ndp->nkmp", self.fine, self.prompt_weight)  # (n, K, M, p)
        prompts = torch.einsum("bnkm,nkmp->bnp", w, values) + self.prompt_bias  # (B, n, p)
        b0 = prompts.reshape(B, -1)  # (B, n*p)
        prompt = self.norm_out(b0 + self.mlp(b0))  # (B, n*p)
        info = {m: PatternWeights(coarse=c[:, i], fine=f[:, i]) for i, m in enumerate(self.modalities)}
        return prompt, info
