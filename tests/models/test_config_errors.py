"""Every bad value of a model config key ends in one ``ConfigError`` line that names the key as a user types it,
the value received and what was expected (built through Hydra, as the command line builds it)."""

from __future__ import annotations

import pytest

from vlm4st.config import compose, instantiate
from vlm4st.errors import CheckpointError, ConfigError

#: T_in = 6 (divisible by 1, 2, 3 and 6), T_out = 4 under the tiny preset.
BASE = ["model=tiny", "lora_type=none", "dataset.t_in=6", "dataset.t_out=4"]

#: (overrides, the key the message must name)
CASES = [
    # DiX-Attention (model.dix)
    (["model.dix.temporal_patch=4"], "model.dix.temporal_patch"),
    (["model.dix.temporal_patch=0"], "model.dix.temporal_patch"),
    (["ablation=no_dix", "model.dix.temporal_patch=4"], "model.dix.temporal_patch"),
    (["model.dims.d_model=30"], "model.dix.d_model"),
    (["model.dims.d_model=0"], "model.dix.d_model"),
    (["model.dims.num_heads=3"], "model.dix.num_heads"),
    (["model.dims.num_heads=0"], "model.dix.num_heads"),
    (["model.dims.dix_layers=0"], "model.dix.num_layers"),
    (["model.dims.dix_mlp_ratio=-1"], "model.dix.mlp_ratio"),
    (["model.dims.dropout=1.5"], "model.dix.dropout"),
    (["model.dims.dropout=-0.1"], "model.dix.dropout"),
    (["model.dims.spatial_pool=0"], "model.dix.spatial_pool"),
    (["model.dims.cross_pool=-2"], "model.dix.cross_pool"),
    (["model.dix.cross_mlp_ratio=0"], "model.dix.cross_mlp_ratio"),
    (["model.dix.cross_mlp_ratio=0.001"], "model.dix.cross_mlp_ratio"),
    (["model.dix.summaries=maybe"], "model.dix.summaries"),
    (["model.dims.calendar_harmonics=0"], "model.dix.harmonics"),
    # AdaptiveGatedFusion (model.fusion)
    (["model.fusion.gate_dim=0"], "model.fusion.gate_dim"),
    (["model.fusion.dropout=1.0"], "model.fusion.dropout"),
    # PromptForge (model.prompt_forge)
    (["model.prompt_forge.num_coarse=0"], "model.prompt_forge.num_coarse"),
    (["model.prompt_forge.num_fine=0"], "model.prompt_forge.num_fine"),
    (["model.prompt_forge.num_coarse=64"], "model.prompt_forge.num_coarse"),
    (["model.prompt_forge.prompt_dim=47"], "model.prompt_forge.prompt_dim"),
    (["model.prompt_forge.temperature=0"], "model.prompt_forge.temperature"),
    (["model.prompt_forge.mask_temperature=-1"], "model.prompt_forge.mask_temperature"),
    (["model.prompt_forge.threshold=1.5"], "model.prompt_forge.threshold"),
    (["model.prompt_forge.hidden_dim=0"], "model.prompt_forge.hidden_dim"),
    (["model.prompt_forge.dropout=1.0"], "model.prompt_forge.dropout"),
    (["model.prompt_forge.modalities=temporal"], "model.prompt_forge.modalities"),
    (["model.prompt_forge.modalities=[temporal,temporal,cross]"], "model.prompt_forge.modalities"),
    (["model.prompt_forge.modalities=[temporal,weather]"], "model.prompt_forge.modalities"),
    # DualPathFormatTransformer (model.format_transformer)
    (["model.format_transformer.image.interpolation=area"], "model.format_transformer.image.interpolation"),
    (["model.dims.num_latents=0"], "model.format_transformer.sequence.num_latents"),
    (["model.dims.num_latents=600"], "model.format_transformer.sequence.num_latents"),
    (["model.dims.resampler_layers=0"], "model.format_transformer.sequence.num_layers"),
    (["model.format_transformer.sequence.num_heads=5"], "model.format_transformer.sequence.num_heads"),
    (["model.format_transformer.sequence.mlp_ratio=-1"], "model.format_transformer.sequence.mlp_ratio"),
    (["model.dims.seq_pool=0"], "model.format_transformer.sequence.pool_size"),
    (["model.format_transformer.sequence.dropout=2"], "model.format_transformer.sequence.dropout"),
    (["model.format_transformer.use_cls=yes"], "model.format_transformer.use_cls"),
    (["model.format_transformer.prompt_dim=0"], "model.format_transformer.prompt_dim"),
    # VLMModule: ViT and BERT sizes, freeze, weights (model.vlm)
    (["model.vlm.vision.num_heads=5"], "model.vlm.vision.num_heads"),
    (["model.vlm.vision.num_heads=0"], "model.vlm.vision.num_heads"),
    (["model.vlm.vision.patch_size=0"], "model.vlm.vision.patch_size"),
    (["model.vlm.vision.img_size=36"], "model.vlm.vision.img_size"),
    (["model.vlm.vision.depth=0"], "model.vlm.vision.depth"),
    (["model.vlm.vision.mlp_ratio=0"], "model.vlm.vision.mlp_ratio"),
    (["model.vlm.vision=5"], "model.vlm.vision"),
    (["model.vlm.text.num_heads=3"], "model.vlm.text.num_heads"),
    (["model.vlm.text.num_layers=0"], "model.vlm.text.num_layers"),
    (["model.vlm.text.intermediate_size=0"], "model.vlm.text.intermediate_size"),
    (["model.vlm.text.fusion_layer=5"], "model.vlm.text.fusion_layer"),
    (["model.vlm.text.hidden_dropout=1.0"], "model.vlm.text.hidden_dropout"),
    (["+model.vlm.text.hidden_act=swishy"], "model.vlm.text.hidden_act"),
    (["+model.vlm.text.max_position_embeddings=0"], "model.vlm.text.max_position_embeddings"),
    (["model.vlm.freeze=maybe"], "model.vlm.freeze"),
    (["+model.vlm.text_weights=bert"], "model.vlm.text_weights"),
    # PredictionHead (model.head)
    (["model.head.hidden_dim=30"], "model.head.hidden_dim"),
    (["model.head.step_readout=null", "model.head.hidden_dim=0"], "model.head.hidden_dim"),
    (["model.head.hidden_dim=0"], "model.head.step_readout.hidden_dim"),  # the readout node reads it first
    (["model.head.context_dim=63"], "model.head.context_dim"),
    (["model.head.num_heads=5"], "model.head.num_heads"),
    (["model.head.cell_heads=3"], "model.head.cell_heads"),
    (["model.head.mlp_ratio=0"], "model.head.mlp_ratio"),
    (["model.head.cell_layers=-1"], "model.head.cell_layers"),
    (["model.head.step_layers=-1"], "model.head.step_layers"),
    (["model.head.query_pool=0"], "model.head.query_pool"),
    (["model.head.visual_dim=0"], "model.head.visual_dim"),
    (["model.head.dropout=-0.1"], "model.head.dropout"),
    (["model.head.temporal_patch=4"], "model.head.temporal_patch"),
    (["model.head.temporal_patch=2"], "model.head.temporal_patch"),
    (["model.dims.temporal_patch=4"], "model.head.temporal_patch"),
    (["model.head.step_readout.max_steps=2"], "model.head.step_readout.max_steps"),
    (["dataset.t_out=70"], "model.head.step_readout.max_steps"),
    (["model.head.step_readout=null", "model.head.out_channels=2"], "model.head.out_channels"),
    (["model.head.cell_embedding.dim=0"], "model.head.cell_embedding.dim"),
    (["model.head.cell_embedding.max_grid=[0,32]"], "model.head.cell_embedding.max_grid"),
    (["model.head.cell_embedding.max_grid=[32]"], "model.head.cell_embedding.max_grid"),
    # STID (model=stid)
    (["model=stid", "model.embed_dim=0"], "model.cell_embedding.dim"),
    (["model=stid", "model.cell_embedding=null", "model.embed_dim=0"], "model.embed_dim"),
    (["model=stid", "model.num_layers=-1"], "model.num_layers"),
    (["model=stid", "model.dropout=1.0"], "model.dropout"),
    (["model=stid", "model.in_channels=0"], "model.in_channels"),
    (["model=stid", "model.cell_embedding.max_grid=[0,3]"], "model.cell_embedding.max_grid"),
]


def _id(case: tuple[list[str], str]) -> str:
    return " ".join(case[0])


@pytest.mark.parametrize(("overrides", "key"), CASES, ids=[_id(c) for c in CASES])
def test_bad_value_is_a_config_error_naming_the_key(overrides: list[str], key: str) -> None:
    cfg = compose([*BASE, *overrides])
    with pytest.raises(ConfigError) as err:
        instantiate(cfg.model, path="model")
    message = str(err.value)
    assert key in message, message
    assert "expected" in message and "\n" not in message, message


def test_missing_albef_file_is_a_checkpoint_error_naming_file_and_key() -> None:
    cfg = compose([*BASE, "model.vlm.pretrained_path=/nonexistent/ALBEF.pth"])
    with pytest.raises(CheckpointError, match=r"'/nonexistent/ALBEF\.pth': file not found \(config key "
                                              r"model\.vlm\.pretrained_path"):
        instantiate(cfg.model, path="model")
