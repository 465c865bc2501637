"""Gradient checkpointing recomputes routed layers in backward; the routing context must still be in place."""

from __future__ import annotations

import pytest
import torch

from .tiny import ROUTED, make_adapter, make_inputs, make_vlm, perturb_adapter


def _loss_and_grads(checkpointing: bool, kind: str) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    vlm = make_vlm(make_adapter(kind, route="task")).train()
    perturb_adapter(vlm)
    vlm.set_grad_checkpointing(checkpointing)
    calls = []
    for path, layer in vlm.adapter.layers:  # one ViT layer and one BERT fusion layer
        if path in ("visual_encoder.blocks.1.attn.qkv.v", "text_encoder.encoder.layer.3.crossattention.self.key"):
            layer.register_forward_hook(lambda *_: calls.append(1))
    image, sequence = make_inputs(batch=4)
    out = vlm(image, sequence, task_id=torch.tensor([2, 0, 3, 1]))
    loss = out.fused.square().mean() + out.visual.abs().mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in vlm.adapter.adapter_parameters(vlm)}
    return loss.detach(), grads, len(calls)


@pytest.mark.parametrize("kind", ROUTED)
def test_checkpointing_gives_the_same_loss_and_gradients(kind: str) -> None:
    loss_off, grads_off, calls_off = _loss_and_grads(False, kind)
    loss_on, grads_on, calls_on = _loss_and_grads(True, kind)
    assert (calls_off, calls_on) == (2, 4)  # checkpointing recomputed both layers during backward
    torch.testing.assert_close(loss_on, loss_off, atol=1e-6, rtol=0)
    assert grads_on.keys() == grads_off.keys()
    assert ("adapter.task_embedding.weight" in grads_on) == (kind != "mtl")  # mtl selects rows by id, no embedding
    for name, grad in grads_off.items():
        torch.testing.assert_close(grads_on[name], grad, atol=1e-6, rtol=0, msg=name)
