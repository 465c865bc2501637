"""Which Linear layers of the VLM module an adapter wraps: target regexes, matching and families.

A target is one regex, ``re.fullmatch``ed (as PEFT does) against each module path relative to the VLM module.
Alternatives naming an encoder that is absent (the ``no_seq`` / ``no_visual`` ablations) simply match nothing;
a pattern that matches nothing at all is a config error.
"""

from __future__ import annotations

import re

from torch import nn

from vlm4st.config import ConfigError

_VIT = r"visual_encoder\.blocks\.\d+"
_BERT = r"text_encoder\.encoder\.layer\.\d+"

#: The default set: ViT q/k/v (split, see ``split_qkv``), BERT self-attention and cross-attention q/k/v.
DEFAULT_TARGETS = rf"({_VIT}\.attn\.qkv\.(q|k|v)|{_BERT}\.(attention|crossattention)\.self\.(query|key|value))"

#: Widened set: also the attention output projections and both FFN linears of every ViT and BERT block.
WIDE_TARGETS = (
    rf"({_VIT}\.(attn\.qkv\.(q|k|v)|attn\.proj|mlp\.fc1|mlp\.fc2)"
    rf"|{_BERT}\.((attention|crossattention)\.(self\.(query|key|value)|output\.dense)"
    r"|intermediate\.dense|output\.dense))"
)

#: Parameter families of the parameter report, tested in order on the parameter path.
FAMILIES = ("vit", "bert_self", "bert_cross", "bert_ffn", "shared")


def compile_targets(targets: str, key: str = "lora_type.targets") -> re.Pattern[str]:
    """Compile the target regex; a malformed or empty one is a ``ConfigError`` naming ``key``."""
    if not isinstance(targets, str) or not targets:
        raise ConfigError(f"{key}: expected a non-empty regex string, got {targets!r}")
    try:
        return re.compile(targets)
    except re.error as err:
        raise ConfigError(f"{key}: {targets!r} is not a valid regex ({err}); expected a Python regex") from err


def resolve_targets(
    module: nn.Module, targets: re.Pattern[str], exclude_prefix: str | None = None, key: str = "lora_type.targets"
) -> list[str]:
    """The paths of the Linear modules ``targets`` fullmatches; raises if it matches nothing or a non-Linear."""
    matched, wrong = [], []
    for name, child in module.named_modules():
        if not name or (exclude_prefix and (name == exclude_prefix or name.startswith(exclude_prefix + "."))):
            continue
        if targets.fullmatch(name):
            (matched if isinstance(child, nn.Linear) else wrong).append(name)
    if wrong:
        raise ConfigError(
            f"{key}: {targets.pattern!r} matches modules that are not nn.Linear: {wrong[:5]}"
            f"{' ...' if len(wrong) > 5 else ''}; expected a pattern that selects Linear layers only"
        )
    if not matched:
        raise ConfigError(
            f"{key}: {targets.pattern!r} matches no Linear layer of the VLM module; expected a regex that "
            "fullmatches paths such as 'text_encoder.encoder.layer.0.attention.self.query'"
        )
    return matched


def family_of(name: str) -> str:
    """The report family of a VLM parameter path: vit, bert_self, bert_cross, bert_ffn or shared."""
    if name.startswith("visual_encoder."):
        return "vit"
    if name.startswith("text_encoder."):
        if ".crossattention." in name:
            return "bert_cross"
        if ".attention." in name:
            return "bert_self"
        return "bert_ffn"
    return "shared"
