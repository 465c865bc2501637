"""The six VLM4ST modules and the model that wires them, and the controls that stand in the VLM's place.

Config targets name the defining modules (``vlm4st.models.dix_attention.DiXAttention`` ...); the model itself is
``vlm4st.models.VLM4ST``.
"""

from vlm4st.models.dix_attention import DiXAttention
from vlm4st.models.forecaster import Forecaster, Intermediates, ParamReport
from vlm4st.models.format_image import ImageProjector
from vlm4st.models.format_sequence import SequenceResampler
from vlm4st.models.format_transformer import DualPathFormatTransformer, FormatOutput
from vlm4st.models.gated_fusion import AdaptiveGatedFusion
from vlm4st.models.input_projection import InputProjection, STFeatures
from vlm4st.models.prediction_head import PredictionHead
from vlm4st.models.prompt_forge import PromptForge
from vlm4st.models.prompt_token import PromptToken
from vlm4st.models.vlm4st import VLM4ST, VLM4STIntermediates
from vlm4st.models.vlm_backbone import VLMBackbone, VLMOutput
from vlm4st.models.vlm_controls import AttentionControl, TransformerControl
from vlm4st.models.vlm_module import VLMModule

__all__ = [
    "VLM4ST",
    "AdaptiveGatedFusion",
    "AttentionControl",
    "DiXAttention",
    "DualPathFormatTransformer",
    "Forecaster",
    "FormatOutput",
    "ImageProjector",
    "InputProjection",
    "Intermediates",
    "ParamReport",
    "PredictionHead",
    "PromptForge",
    "PromptToken",
    "STFeatures",
    "SequenceResampler",
    "TransformerControl",
    "VLM4STIntermediates",
    "VLMBackbone",
    "VLMModule",
    "VLMOutput",
]
