"""VLM4ST: the model that wires the six modules.

x (B, T_in, H, W) in [-1, 1]
  -> DiX-Attention (or the ``no_dix`` input projection)   X_input/X_temporal/X_spatial/X_cross (B,T,H,W,d), summaries
  -> PromptForge (absent under ``no_prompt``)               prompt (B, P), pattern weights
  -> AdaptiveGatedFusion (absent with a single branch)      X_fused (B,T,H,W,d), gates (B,T,H,W,n)
  -> DualPathFormatTransformer                              image (B,3,S,S) and/or sequence (B,L,D)
  -> VLMModule (ALBEF ViT + text/fusion BERT + adapter)      fused tokens (B,N,D)
  -> PredictionHead                                          (B, T_out, H, W, C)
Every module arrives built (Hydra instantiates the nested ``_target_`` nodes first); an ablated module is None and
is neither built nor computed. The constructor checks that the modules fit together and names the config key when
they do not. The model keeps no state between calls.

The VLM's place (``model.vlm``) holds any ``VLMBackbone``: the ALBEF ``VLMModule``, or a control of
``vlm_controls`` (one random layer over the same tokens: ``vlm2attn`` / ``vlm2trsf``). Under ``no_vlm`` it is
empty: no format transformer and no VLM; PromptForge's prompt, projected by ``model.prompt_token`` to the head's
context width, is the head's only context token, and without PromptForge the head reads no context at all.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from vlm4st import checks
from vlm4st.adapters.counting import ParamCount, parameter_report
from vlm4st.errors import ConfigError
from vlm4st.models.forecaster import Intermediates, ParamReport
from vlm4st.models.format_transformer import DualPathFormatTransformer
from vlm4st.models.gated_fusion import AdaptiveGatedFusion
from vlm4st.models.prediction_head import PredictionHead
from vlm4st.models.prompt_forge import PromptForge
from vlm4st.models.prompt_token import PromptToken
from vlm4st.models.vlm_backbone import VLMBackbone, VLMOutput
from vlm4st.models.window_norm import WindowNorm

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class VLM4STIntermediates(Intermediates):
    """The tensors between the modules (besides the fusion gates and PromptForge's weights). DiX's outputs are on
    its token grid (B, T, h, w, d): the cells unless ``model.dims.dix_spatial_patch`` > 1, T = T_in /
    temporal_patch; None under ``no_dix``."""

    x_temporal: torch.Tensor | None  # (B, T, h, w, d)
    x_spatial: torch.Tensor | None  # (B, T, h, w, d)
    x_cross: torch.Tensor | None  # (B, T, h, w, d)
    x_input: torch.Tensor  # (B, T, H, W, d)
    prompt: torch.Tensor | None  # (B, P): PromptForge's prompt; None under no_prompt
    x_fused: torch.Tensor  # (B, T, H, W, d)
    image: torch.Tensor | None  # (B, 3, S, S); None under no_visual and no_vlm
    sequence: torch.Tensor | None  # (B, L, D); None under no_seq and no_vlm
    vlm_output: VLMOutput | None  # None under no_vlm


class VLM4ST(nn.Module):
    """Spatiotemporal forecaster through a vision-language encoder.

    Args:
        dix: ``DiXAttention`` or ``InputProjection`` (``no_dix``).
        format_transformer: ``DualPathFormatTransformer``, or None with no VLM (``no_vlm``).
        vlm: a ``VLMBackbone`` (``VLMModule``, or a control of ``vlm_controls``), or None (``no_vlm``).
        head: ``PredictionHead``.
        t_in, t_out: input and forecast lengths.
        prompt_forge: ``PromptForge`` or None (``no_prompt``: no prompt token at all).
        fusion: ``AdaptiveGatedFusion``, or None when ``dix`` yields a single branch (X_fused = X_input).
        out_channels: C of the forecast.
        window_norm: ``WindowNorm`` or None: every window enters relative to its last frame and in units of its
            own frame-to-frame change, and the forecast is mapped back (what carries a model to a city it never
            trained on).
        dims: the preset-level sizes the module nodes interpolate (``model.dims``); ``d_model`` and ``vlm_width``
            are checked against the modules, and the mapping is kept as ``self.dims`` for logs.
        prompt_token: ``PromptToken`` projecting the prompt to the head's context width when there is no VLM
            (``no_vlm`` with PromptForge); None otherwise (with a VLM the format transformer projects it).
    """

    def __init__(
        self,
        dix: nn.Module,
        format_transformer: DualPathFormatTransformer | None,
        vlm: VLMBackbone | None,
        head: PredictionHead,
        t_in: int,
        t_out: int,
        prompt_forge: PromptForge | None = None,
        fusion: AdaptiveGatedFusion | None = None,
        out_channels: int = 1,
        dims: Mapping[str, Any] | None = None,
        window_norm: WindowNorm | None = None,
        prompt_token: PromptToken | None = None,
    ) -> None:
        super().__init__()
        if isinstance(dims, DictConfig):
            dims = OmegaConf.to_container(dims, resolve=True)
        self.dims: dict[str, Any] = dict(dims or {})
        self.t_in = checks.positive_int(t_in, "model.t_in")
        self.t_out = checks.positive_int(t_out, "model.t_out")
        self.out_channels = checks.positive_int(out_channels, "model.out_channels")
        self.dix = dix
        self.prompt_forge = prompt_forge
        self.fusion = fusion
        self.format_transformer = format_transformer
        self.vlm = vlm
        self.prompt_token = prompt_token
        self.head = head
        self.window_norm = window_norm
        self._check_wiring()
        if vlm is None:
            log.info("model.vlm is null (no_vlm): no format transformer and no VLM; lora_type adapts nothing, and the "
                     "head reads %s", "the prompt token only" if prompt_token is not None else "no context")

    def _check_wiring(self) -> None:
        """Raise ``ConfigError`` naming the key when modules do not fit together."""
        self._check_spatiotemporal()
        if self.vlm is None and self.format_transformer is None:
            self._check_no_vlm()
        else:
            self._check_vlm()
        self._check_prompt()

    def _check_spatiotemporal(self) -> None:
        """DiX, fusion and head agree on widths, lengths and the temporal patch."""
        head = self.head
        d = self.dix.d_model
        stated = [("model.head.d_model", head.d_model)]
        if "d_model" in self.dims:  # a model built from Python may state no preset sizes
            stated.append(("model.dims.d_model", self.dims["d_model"]))
        for key, value in stated:
            if value != d:
                raise ConfigError(f"{key}: {value} differs from the DiX width model.dix.d_model; expected {d}")
        if head.out_channels != self.out_channels:
            raise ConfigError(
                f"model.head.out_channels: {head.out_channels} differs from model.out_channels; expected "
                f"{self.out_channels}"
            )
        if head.t_in != self.t_in:
            raise ConfigError(f"model.head.t_in: {head.t_in} differs from model.t_in; expected {self.t_in}")
        if self.window_norm is not None and self.t_in < 2:
            raise ConfigError(f"model.window_norm needs two input steps to measure change; model.t_in is {self.t_in}, "
                              "expected >= 2 (or model.window_norm=null)")
        patch = self.dix.embed.temporal_patch
        if self.t_in % patch:
            raise ConfigError(
                f"model.dix.temporal_patch: {patch} does not divide model.t_in = {self.t_in}; expected a divisor of "
                f"{self.t_in} (the presets set it through model.dims.temporal_patch)"
            )
        if head.temporal_patch != patch:
            raise ConfigError(
                f"model.head.temporal_patch: {head.temporal_patch} differs from model.dix.temporal_patch; expected "
                f"{patch} (the head reads one DiX token per this many input steps)"
            )
        readout = head.step_readout
        if readout is not None and readout.max_steps < self.t_out:
            raise ConfigError(
                f"model.head.step_readout.max_steps: {readout.max_steps} is shorter than the horizon "
                f"model.t_out = {self.t_out}; expected at least {self.t_out}"
            )
        n_branches = len(self.dix.branch_names)
        if (self.fusion is None) != (n_branches == 1):
            raise ConfigError(
                f"model.fusion: the DiX module yields {n_branches} branch(es) {list(self.dix.branch_names)}; "
                "expected a fusion module exactly when there is more than one (null it for a single branch)"
            )

    def _check_context_width(self, width: int, source: str) -> None:
        """The head's context width and ``model.dims.vlm_width`` equal the width ``width`` of the context tokens."""
        stated = [("model.head.context_dim", self.head.context_dim)]
        if "vlm_width" in self.dims:
            stated.append(("model.dims.vlm_width", self.dims["vlm_width"]))
        for key, value in stated:
            if value != width:
                raise ConfigError(f"{key}: {value} differs from the width of the head's context ({source}); "
                                  f"expected {width}")

    def _check_vlm(self) -> None:
        """A backbone in the VLM's place: its inputs match the format transformer's paths, its width the head's."""
        fmt, vlm, head = self.format_transformer, self.vlm, self.head
        for key, module, other in (("model.vlm", vlm, "model.format_transformer"),
                                   ("model.format_transformer", fmt, "model.vlm")):
            if module is None:
                raise ConfigError(f"{key} is null but {other} is set; expected both set, or both null "
                                  "(ablation=no_vlm)")
        if not isinstance(vlm, VLMBackbone):
            raise ConfigError(f"model.vlm: {type(vlm).__name__} is not a vlm4st.models.vlm_backbone.VLMBackbone; "
                              "expected a VLM module or a control of vlm4st.models.vlm_controls")
        if self.prompt_token is not None:
            raise ConfigError("model.prompt_token is set, but with a VLM the format transformer projects the prompt "
                              "(model.format_transformer.prompt_dim); expected null (only ablation=no_vlm sets it)")
        D = vlm.hidden_size
        if fmt.out_dim != D:
            raise ConfigError(f"model.format_transformer.out_dim: {fmt.out_dim} differs from the VLM width "
                              f"(model.vlm); expected {D}")
        self._check_context_width(D, f"the VLM width of model.vlm, {type(vlm).__name__}")
        for path, module, takes, key in (("image", fmt.image, vlm.takes_image, "vision"),
                                         ("sequence", fmt.sequence, vlm.takes_sequence, "text")):
            if (module is None) == takes:
                raise ConfigError(
                    f"model.format_transformer.{path} is {'null' if module is None else 'set'} but model.vlm.{key} "
                    f"is {'set' if takes else 'null'}; expected both set or both null"
                )
        limit = vlm.max_sequence_tokens
        if limit is not None and fmt.num_tokens() > limit:
            extra = fmt.num_tokens() - fmt.sequence.num_latents  # CLS and PROMPT tokens
            raise ConfigError(
                f"model.format_transformer.sequence.num_latents: {fmt.sequence.num_latents} latents make a sequence "
                f"of {fmt.num_tokens()} tokens, more than model.vlm.text.max_position_embeddings = {limit}; "
                f"expected at most {limit - extra} latents"
            )
        if head.visual_dim is not None and (not vlm.takes_image or head.visual_dim != D):
            raise ConfigError(
                f"model.head.visual_dim: {head.visual_dim}; expected the VLM width {D} with a vision encoder, "
                "or null without one"
            )

    def _check_no_vlm(self) -> None:
        """No VLM: the head reads the prompt token (width ``model.prompt_token.out_dim``) or no context at all."""
        head, token = self.head, self.prompt_token
        if token is None:
            if head.context_dim is not None:
                raise ConfigError(
                    f"model.head.context_dim: {head.context_dim}; expected null: without a VLM and without a prompt "
                    "token (model.prompt_token) the head reads no context"
                )
        else:
            self._check_context_width(token.out_dim, "the prompt token, model.prompt_token.out_dim")
        if head.visual_dim is not None:
            raise ConfigError(f"model.head.visual_dim: {head.visual_dim}; expected null without a VLM "
                              "(no ViT patch map)")

    def _check_prompt(self) -> None:
        """PromptForge's output width fits its projection, and its modalities are summaries the DiX module gives."""
        fmt, pf, token = self.format_transformer, self.prompt_forge, self.prompt_token
        if fmt is not None:
            key, width = "model.format_transformer.prompt_dim", fmt.prompt_dim
        else:
            key, width = "model.prompt_token.in_dim", None if token is None else token.in_dim
        if pf is None:
            if width is not None:
                raise ConfigError(f"{key}: {width}; expected null when model.prompt_forge is null"
                                  + (" (model.prompt_token=null)" if fmt is None else ""))
            return
        if fmt is None and token is None:
            raise ConfigError(
                "model.prompt_token: null, but model.prompt_forge is set; without a VLM the prompt reaches the head "
                "only through model.prompt_token; expected a PromptToken node (ablation=no_vlm sets one) or "
                "model.prompt_forge=null"
            )
        if width != pf.out_dim:
            raise ConfigError(
                f"{key}: {width}; expected PromptForge's output width {pf.out_dim} (modalities x prompt_dim)"
            )
        unknown = sorted(set(pf.modalities) - set(self.dix.summary_names))
        if unknown:
            raise ConfigError(
                f"model.prompt_forge.modalities: {unknown} are not produced by model.dix; expected names among "
                f"{list(self.dix.summary_names)}"
            )

    def forward(
        self,
        x: torch.Tensor,
        timestamps: torch.Tensor | None,
        task_id: torch.Tensor,
        return_intermediate: bool = False,
        target_timestamps: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, VLM4STIntermediates]:
        """x (B, T_in, H, W); timestamps (B, T_in, 3) long time codes [weekday, minute of day, interval]; task_id
        (B,) long in [0, num_tasks] (num_tasks: the unknown task); target_timestamps (B, T_out, 3) long, the codes of
        the forecast steps (required with ``timestamps``: ``vlm4st.data.timestamps.following`` derives them).

        Returns the forecast (B, T_out, H, W, C); with ``return_intermediate`` also the ``VLM4STIntermediates``
        (gate_weights per cell: a patch's gates on each of its cells; None with a single branch).
        """
        if x.dim() != 4 or x.shape[1] != self.t_in:
            raise ValueError(f"input: expected (B, T_in={self.t_in}, H, W) (model.t_in), got {tuple(x.shape)}")
        if timestamps is not None and target_timestamps is None:
            raise ValueError(
                "target_timestamps: missing; a model given input timestamps also needs the (B, T_out, 2) stamps of "
                "the forecast steps (batches carry them as 'target_timestamps')"
            )
        stats = None
        if self.window_norm is not None:
            x, stats = self.window_norm.normalise(x)  # (B, T_in, H, W) relative to the last frame
        feats = self.dix(x, timestamps)  # X_* (B, T, H, W, d)
        prompt, pattern_info = (None, None) if self.prompt_forge is None else self.prompt_forge(feats.summaries)
        if self.fusion is None:
            x_fused, gates = feats.x_input, None  # (B, T, H, W, d)
        else:
            x_fused, gates = self.fusion(feats.branches())  # token grid (B, T, h, w, d), (B, T, h, w, n)
            x_fused = feats.to_cells(x_fused)  # (B, T, H, W, d)
        image = sequence = vlm_out = visual = None
        if self.vlm is None:  # no_vlm: the prompt token, if any, is the head's only context
            context = None if self.prompt_token is None else self.prompt_token(prompt)  # (B, 1, D) | None
        else:
            fmt = self.format_transformer(x_fused, image_size=self.vlm.image_size, prompt=prompt)
            image, sequence = fmt.image, fmt.sequence  # (B, 3, S, S) | None, (B, L, D) | None
            vlm_out = self.vlm(image, sequence, task_id=task_id)  # fused (B, N, D)
            context = vlm_out.fused
            if sequence is None and fmt.prompt_token is not None:  # no_seq: the prompt reaches the head directly
                context = torch.cat([context, fmt.prompt_token], dim=1)  # (B, N+1, D)
            if self.head.visual_dim is not None:
                visual = vlm_out.visual  # (B, 1+P, D)
        pred = self.head(x_fused, x, context, self.t_out, target_timestamps, task_id, visual)  # (B, T_out, H, W, C)
        if stats is not None:
            pred = self.window_norm.restore(pred, stats)  # (B, T_out, H, W, C) on the data's scale
        if not return_intermediate:
            return pred
        return pred, VLM4STIntermediates(
            x_temporal=feats.x_temporal,
            x_spatial=feats.x_spatial,
            x_cross=feats.x_cross,
            x_input=feats.x_input,
            prompt=prompt,
            pattern_info=pattern_info,
            x_fused=x_fused,
            gate_weights=None if gates is None else feats.gates_to_cells(gates),  # (B, T, H, W, n)
            image=image,
            sequence=sequence,
            vlm_output=vlm_out,
        )


    def describe_adapter(self) -> dict[str, object]:
        """The adapter's type and hyperparameters, stored in checkpoints; ``{"type": "none", "vlm": None}`` without
        a VLM (``no_vlm``: nothing to adapt)."""
        if self.vlm is None:
            return {"type": "none", "vlm": None}
        return self.vlm.adapter.describe()

    def freeze_vlm_backbone(self) -> None:
        """Freeze the VLM's backbone weights only (ViT/BERT, or a control's layer); adapter parameters and every
        non-VLM module stay trainable. Without a VLM (``no_vlm``) every parameter trains, and the log says so.

        The adapter enumerates its own parameters (``adapter_parameters``), so no parameter name is matched.
        """
        for name, p in self.named_parameters():
            if not name.startswith("vlm."):
                p.requires_grad_(True)
        if self.vlm is None:
            log.info("freeze_vlm_backbone: model.vlm is null (no_vlm), no backbone to freeze; every module trains")
            return
        self.vlm.freeze_backbone()  # the VLM module decides its own parameters: backbone frozen, adapter trains

    def unfreeze_all(self) -> None:
        """Make every parameter trainable (full fine-tuning)."""
        for p in self.parameters():
            p.requires_grad_(True)

    def get_trainable_parameters(self) -> ParamReport:
        """Parameter counts in all and per built child (a control's layer counts under ``vlm``), the VLM split
        into backbone and adapter, which encoders are frozen and why, and the class in the VLM's place (none under
        ``no_vlm``: no ``vlm`` module entry, zero adapter and backbone parameters)."""
        if self.vlm is None:
            return ParamReport.of_modules(self)
        adapter_ids = {id(p) for _, p in self.vlm.adapter.adapter_parameters(self.vlm)}
        return ParamReport.of_modules(
            self,
            adapter=parameter_report(self.vlm),
            vlm_backbone=ParamCount.of(p for p in self.vlm.parameters() if id(p) not in adapter_ids),
            vlm=type(self.vlm).__name__,
            frozen_encoders=self.vlm.frozen_encoders,
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in backward: the VLM's layers (ViT, BERT or a control's layer; none under
        ``no_vlm``) and the DiX branches."""
        if self.vlm is not None:
            self.vlm.set_grad_checkpointing(enable)
        self.dix.set_grad_checkpointing(enable)
