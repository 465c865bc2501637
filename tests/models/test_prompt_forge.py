"""PromptForge: the vectorised computation equals a per-sample loop; selection is soft, renormalised, configurable."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlm4st.errors import ConfigError
from vlm4st.models.prompt_forge import PromptForge

D = 16
MODALITIES = ("temporal", "spatial", "cross")


def forge(**kw) -> PromptForge:
    kw.setdefault("mask_temperature", 0.05)
    return PromptForge(D, MODALITIES, num_coarse=5, num_fine=3, prompt_dim=24, hidden_dim=32, dropout=0.0, **kw)


def summaries(B: int) -> dict[str, torch.Tensor]:
    return {m: torch.randn(B, D) for m in MODALITIES}


def per_sample(pf: PromptForge, s: dict[str, torch.Tensor], b: int) -> tuple[torch.Tensor, list, list]:
    """One sample, one memory at a time, with an explicit sort and loops over groups (the plain per-sample form)."""
    prompts, coarse_out, fine_out = [], [], []
    for i, name in enumerate(pf.modalities):
        q = s[name][b] @ pf.query_weight[i] + pf.query_bias[i]
        q = F.normalize(F.layer_norm(q, (D,)) * pf.norm_weight[i] + pf.norm_bias[i], dim=0)
        c = torch.softmax(F.normalize(pf.coarse[i], dim=-1) @ q / pf.temperature, dim=0)
        if pf.threshold is not None:
            order = torch.sort(c, descending=True, stable=True).indices
            mass, running = torch.zeros_like(c), 0.0
            for k in order.tolist():
                mass[k] = running
                running = running + c[k]
            keep = torch.sigmoid((pf.threshold - mass) / pf.mask_temperature)
            c = c * keep / (c * keep).sum()
        prompt = pf.prompt_bias[i].clone()
        fines = []
        for k in range(c.shape[0]):
            f = torch.softmax(F.normalize(pf.fine[i, k], dim=-1) @ q / pf.temperature, dim=0)
            fines.append(f)
            for m in range(f.shape[0]):
                prompt = prompt + c[k] * f[m] * (pf.fine[i, k, m] @ pf.prompt_weight[i])
        prompts.append(prompt)
        coarse_out.append(c)
        fine_out.append(torch.stack(fines))
    b0 = torch.cat(prompts)[None]
    return pf.norm_out(b0 + pf.mlp(b0))[0], coarse_out, fine_out


@pytest.mark.parametrize("threshold", [0.9, 0.5, None])
def test_vectorised_equals_per_sample(threshold: float | None) -> None:
    pf = forge(threshold=threshold, temperature=0.1).eval()
    s = summaries(6)
    prompt, info = pf(s)
    assert prompt.shape == (6, 24)
    for b in range(6):
        ref_prompt, ref_c, ref_f = per_sample(pf, s, b)
        torch.testing.assert_close(prompt[b], ref_prompt, rtol=1e-5, atol=1e-5)
        for i, name in enumerate(MODALITIES):
            torch.testing.assert_close(info[name].coarse[b], ref_c[i], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(info[name].fine[b], ref_f[i], rtol=1e-5, atol=1e-6)


def test_weights_renormalised_and_low_groups_fade() -> None:
    pf = forge(threshold=0.5, temperature=0.05).eval()
    _, info = pf(summaries(8))
    for name in MODALITIES:
        c, f = info[name].coarse, info[name].fine
        assert c.shape == (8, 5) and f.shape == (8, 5, 3)
        torch.testing.assert_close(c.sum(-1), torch.ones(8))
        torch.testing.assert_close(f.sum(-1), torch.ones(8, 5))
        assert (c.min(dim=-1).values < 1e-3).all()  # the tail past the top-p mass is (softly) cut


def test_selection_is_differentiable() -> None:
    pf = forge(threshold=0.9)
    prompt, info = pf(summaries(4))
    (prompt.square().sum() + info["cross"].coarse[:, 0].sum()).backward()
    for name, p in pf.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match=r"model\.prompt_forge\.threshold: expected a value in \(0, 1\]"):
        forge(threshold=1.5)
    with pytest.raises(ConfigError, match=r"model\.prompt_forge\.temperature: expected a number > 0, got 0\.0"):
        forge(temperature=0.0)
    with pytest.raises(ConfigError, match=r"model\.prompt_forge\.prompt_dim: 25 .* not divisible"):
        PromptForge(D, MODALITIES, prompt_dim=25)
    with pytest.raises(ValueError, match="lack"):
        forge()({"temporal": torch.randn(2, D)})


def test_single_modality_keeps_width() -> None:
    pf = PromptForge(D, ["input"], prompt_dim=24)
    prompt, info = pf({"input": torch.randn(3, D)})
    assert prompt.shape == (3, 24) and pf.out_dim == 24 and list(info) == ["input"]
