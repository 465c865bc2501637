"""Per-sample routing context shared by a routed adapter and all of its LoRA layers.

The timm and HF blocks call their projections as ``self.qkv(x)`` / ``self.query(x)``, so a routed layer cannot
receive the task ids as a forward argument. Instead ``adapter.route(task_id)`` writes them, and the shared task
embedding rows, into one ``RoutingContext`` before the encoders run, and every routed layer reads it.

Why a plain object and not an ``nn.Module`` or a forward hook:
- PEFT treats every child of a tuner layer other than ``base_layer`` as adapter state; a module shared by 90
  layers would be saved and counted 90 times. A plain attribute is invisible to ``state_dict`` and ``parameters``.
- Gradient checkpointing recomputes layer forwards during backward, after ``forward`` has returned. Hooks that
  inject kwargs are gone by then; this context is still set because it is **never cleared at the end of forward**
  (the next ``route`` call overwrites it).
- Use DDP, not ``nn.DataParallel``: DataParallel's replica threads would share and race on the one object.
Only layers routed by task (``route: task``) read the context; input-routed layers need nothing from it.
"""

from __future__ import annotations

import torch

from vlm4st.adapters.errors import AdapterError


class RoutingContext:
    """Holds the task embedding rows of the current batch: (B, task_dim), or (1, task_dim) for "all unknown"."""

    def __init__(self) -> None:
        self.task_ids: torch.Tensor | None = None  # (B,) long, or None: every sample uses the unknown id
        self.task_emb: torch.Tensor | None = None  # (B, task_dim) or (1, task_dim)
        self.is_set = False

    def set(self, task_emb: torch.Tensor, task_ids: torch.Tensor | None) -> None:
        """Install the routing of the coming forward pass (overwrites the previous one)."""
        if task_emb.dim() != 2:
            raise AdapterError(f"RoutingContext.set: task_emb must be (B, task_dim), got {tuple(task_emb.shape)}")
        if task_ids is not None and task_ids.shape[0] != task_emb.shape[0]:
            raise AdapterError(
                f"RoutingContext.set: {task_ids.shape[0]} task ids but {task_emb.shape[0]} embedding rows"
            )
        self.task_ids = task_ids
        self.task_emb = task_emb
        self.is_set = True

    def embedding_for(self, batch_size: int, layer_name: str) -> torch.Tensor:
        """The (batch_size, task_dim) task embeddings for a layer whose input has ``batch_size`` samples."""
        if not self.is_set or self.task_emb is None:
            raise AdapterError(
                f"routed LoRA layer '{layer_name}': the routing context is unset; the VLM module must call "
                "adapter.route(task_id) before the encoders run"
            )
        if self.task_ids is None:  # route(None): every sample takes the unknown id
            return self.task_emb.expand(batch_size, -1)  # (B, task_dim)
        if self.task_emb.shape[0] != batch_size:
            raise AdapterError(
                f"routed LoRA layer '{layer_name}': input batch size {batch_size} differs from the "
                f"{self.task_emb.shape[0]} task ids given to adapter.route(); route each batch before its forward"
            )
        return self.task_emb  # (B, task_dim)
