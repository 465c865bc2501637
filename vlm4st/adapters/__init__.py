"""Adapters injected into the VLM backbones (the `lora_type` config group)."""
