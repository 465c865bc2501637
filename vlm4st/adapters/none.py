"""``lora_type=none``: no adapter layers; full fine-tuning of the VLM backbone, or a frozen backbone."""

from __future__ import annotations

from vlm4st import checks
from vlm4st.adapters.base import Adapter


class NoAdapter(Adapter):
    """Adds nothing to the encoders.

    ``freeze_backbone=False`` (``conf/lora_type/none.yaml``): every backbone weight trains (full fine-tuning) unless
    ``model.vlm.freeze=true``.
    ``freeze_backbone=True``: under ``model.vlm.freeze=auto`` the encoders with pretrained weights stay frozen and
    only the modules around the VLM train on them; a randomly initialised encoder still trains in full.
    """

    def __init__(self, freeze_backbone: bool) -> None:
        super().__init__()
        self.asks_frozen_backbone = checks.flag(freeze_backbone, "lora_type.freeze_backbone")

    def describe(self) -> dict[str, object]:
        return {"type": "none", "freeze_backbone": self.asks_frozen_backbone}
