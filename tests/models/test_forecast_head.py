"""The prediction head: forecast-step timestamps, per-cell reading of the VLM tokens under every ablation, any
grid and T_out, learned cell identity with an unseen-dataset fallback; STID shares the model interface."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.models.conftest import T_IN, T_OUT, batch, build_model, future, options
from vlm4st.config import ConfigError, compose, instantiate
from vlm4st.data.timestamps import following
from vlm4st.models.cell_embedding import CellEmbedding


def wake_deep_branches(head: torch.nn.Module) -> None:
    """The head's DiX, ViT and VLM-token branches start at zero by design; give them weights as training would."""
    for layer in (head.film, head.dix, head.visual_proj, head.read.attn.proj, head.read.mlp.fc2):
        if layer is not None:
            torch.nn.init.normal_(layer.weight, std=0.1)


def test_following_timestamps_wrap_days_and_weeks() -> None:
    last = torch.tensor([[6, 46], [2, 3]]).numpy()  # Sunday 23:00, Wednesday 01:30
    out = following(last, 3, 48)
    assert out.tolist() == [[[6, 47], [0, 0], [0, 1]], [[2, 4], [2, 5], [2, 6]]]


def test_target_timestamps_change_the_forecast() -> None:
    model = build_model("tiny", extra=["model.dims.dropout=0.0"]).eval()
    x, ts, task, target_ts = batch(2, 10, 20)
    shifted = target_ts.clone()
    shifted[..., 0] = (shifted[..., 0] + 3) % 7  # same input, another weekday and time of the forecast steps
    shifted[..., 1] = (shifted[..., 1] + 17) % 48
    with torch.no_grad():
        a = model(x, ts, task, target_timestamps=target_ts)
        b = model(x, ts, task, target_timestamps=shifted)
        again = model(x, ts, task, target_timestamps=target_ts)
    torch.testing.assert_close(a, again)
    assert (a - b).abs().max() > 1e-4


def test_missing_target_timestamps_is_an_error() -> None:
    model = build_model("tiny").eval()
    x, ts, task, _ = batch(1, 8, 8)
    with pytest.raises(ValueError, match="target_timestamps"):
        model(x, ts, task)
    with pytest.raises(ValueError, match=r"target_timestamps: expected time codes of shape"):
        model(x, ts, task, target_timestamps=torch.zeros(1, T_OUT + 1, 2, dtype=torch.long))


@pytest.mark.parametrize("ablation", options("ablation"))
def test_head_at_two_grids_and_another_horizon(ablation: str) -> None:
    """Every ablation: two grid sizes, T_out != T_in, and the same weights at another T_out."""
    model = build_model("tiny", ablation, extra=["model.dims.dropout=0.0"]).eval()
    assert T_OUT != T_IN
    for H, W in ((6, 9), (12, 12)):
        x, ts, task, target_ts = batch(2, H, W)
        with torch.no_grad():
            pred = model(x, ts, task, target_timestamps=target_ts)
            model.t_out = 9
            longer = model(x, ts, task, target_timestamps=future(ts, 9))
            model.t_out = T_OUT
        assert pred.shape == (2, T_OUT, H, W, 1) and torch.isfinite(pred).all()
        assert longer.shape == (2, 9, H, W, 1)
        torch.testing.assert_close(longer[:, :T_OUT], pred)


@pytest.mark.parametrize("ablation", options("ablation"))
def test_changing_the_vlm_tokens_changes_every_cell(ablation: str) -> None:
    """Every cell reads the context tokens: the VLM's, or under no_vlm the prompt token."""
    model = build_model("tiny", ablation, extra=["model.dims.dropout=0.0"]).eval()
    wake_deep_branches(model.head)
    x, ts, task, target_ts = batch(1, 7, 11)
    source = model.vlm if model.vlm is not None else model.prompt_token

    def perturb(_module, _inputs, output):
        if isinstance(output, torch.Tensor):  # the prompt token (B, 1, D)
            return output + torch.randn_like(output)
        return dataclasses.replace(output, fused=output.fused + torch.randn_like(output.fused))

    with torch.no_grad():
        base = model(x, ts, task, target_timestamps=target_ts)
        handle = source.register_forward_hook(perturb)
        changed = model(x, ts, task, target_timestamps=target_ts)
        handle.remove()
    moved = (changed - base).abs().amax(dim=(0, 1, 4))  # (H, W)
    assert bool((moved > 1e-6).all()), "some cells do not depend on the VLM output"


def test_query_pooling_keeps_the_grid() -> None:
    model = build_model("tiny", extra=["model.dims.head_query_pool=3"]).eval()
    x, ts, task, target_ts = batch(2, 10, 20)
    with torch.no_grad():
        assert model(x, ts, task, target_timestamps=target_ts).shape == (2, T_OUT, 10, 20, 1)


def test_cell_embedding_per_task_and_unknown_task_fallback() -> None:
    emb = CellEmbedding(num_tasks=2, max_grid=[8, 8], dim=4)
    ids = emb(torch.tensor([0, 1, 2]), 5, 6)  # id 2 = the unknown task
    assert ids.shape == (3, 5, 6, 4)
    assert ids[2].abs().max() == 0 and ids[0].abs().max() > 0
    torch.testing.assert_close(ids[0], emb.table[0, :5, :6])
    assert torch.equal(emb(torch.tensor([emb.num_tasks]), 5, 6), torch.zeros(1, 5, 6, emb.dim))  # unknown task
    with pytest.raises(ConfigError, match="max_grid"):
        emb(torch.tensor([0]), 9, 2)


def test_unseen_dataset_uses_positional_codes_only() -> None:
    """Zero-shot: with the unknown task id the forecast does not depend on any cell table."""
    model = build_model("tiny", extra=["model.dims.dropout=0.0"]).eval()
    unknown = model.head.cell_embedding.num_tasks
    x, ts, task, target_ts = batch(2, 10, 20)
    with torch.no_grad():
        seen = model(x, ts, task, target_timestamps=target_ts)
        unseen = model(x, ts, torch.full_like(task, unknown), target_timestamps=target_ts)
        model.head.cell_embedding.table.normal_()
        seen_after = model(x, ts, task, target_timestamps=target_ts)
        unseen_after = model(x, ts, torch.full_like(task, unknown), target_timestamps=target_ts)
    assert (seen_after - seen).abs().max() > 1e-4  # known tasks read their table
    torch.testing.assert_close(unseen_after, unseen)  # the unseen dataset never does
    assert (unseen - seen).abs().max() > 0


def test_cell_embedding_is_optional() -> None:
    model = build_model("tiny", extra=["model.head.cell_embedding=null"]).eval()
    assert model.head.cell_embedding is None and model.head.cell_id is None
    x, ts, task, target_ts = batch(1, 10, 20)
    assert model(x, ts, task, target_timestamps=target_ts).shape == (1, T_OUT, 10, 20, 1)


def test_stid_runs_in_the_model_interface() -> None:
    cfg = compose(["model=stid", f"dataset.t_in={T_IN}", f"dataset.t_out={T_OUT}"])
    model = instantiate(cfg.model, path="model")
    x, ts, task, target_ts = batch(3, 10, 20)
    pred = model(x, ts, task, target_timestamps=target_ts)
    assert pred.shape == (3, T_OUT, 10, 20, 1)
    loss, _ = instantiate(cfg.trainer.loss, path="trainer.loss")(pred, torch.zeros(3, T_OUT, 10, 20))
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "cell_embedding" not in n)
    counts = model.get_trainable_parameters()
    assert counts.trainable == counts.total > 0 and counts.adapter.trainable == 0
    with torch.no_grad():
        unseen = model(x, ts, torch.full_like(task, model.cell_embedding.num_tasks))
        changed = ts.clone()
        changed[:, -1, 1] = (changed[:, -1, 1] + 20) % 48  # STID reads the last input step's time of day
        assert (model(x, changed, task) - pred).abs().max() > 1e-5
    assert unseen.shape == pred.shape


@pytest.mark.parametrize("override", ["model.head.cell_embedding.num_tasks=1", "lora_type.num_tasks=1"])
def test_per_task_tables_must_cover_every_dataset(override: str) -> None:
    """The range of task ids is checked once when the model is built, not per batch in the forward pass."""
    from vlm4st.training.tasks import build_model as build_for_data

    cfg = compose(["model=tiny", "lora_type=moe", f"dataset.t_in={T_IN}", f"dataset.t_out={T_OUT}", override])
    build_for_data(cfg.model, 1, T_IN, T_OUT)  # one dataset: ids 0 and 1 (unknown) fit
    with pytest.raises(ConfigError, match=r"num_tasks=1 but the data has 2 dataset\(s\)"):
        build_for_data(cfg.model, 2, T_IN, T_OUT)
