"""Per-sample routing context shared by a routed adapter and all of its LoRA layers.

The timm and HF blocks call their projections as ``self.qkv(x)`` / ``self.query(x)``, so a routed layer cannot
receive the task ids as a forward argument. Instead ``adapter.route(task_id)`` writes them (and, for adapters
whose gates read a task embedding, the shared embedding rows) into one ``RoutingContext`` before the encoders
run, and every routed layer reads it.

Why a plain object and not an ``nn.Module`` or a forward hook:
- PEFT treats every child of a tuner layer other than ``base_layer`` as adapter state; a module shared by 90
  layers would be saved and counted 90 times. A plain attribute is invisible to ``state_dict`` and ``parameters``.
- Gradient checkpointing recomputes layer forwards during backward, after ``forward`` has returned. Hooks that
  inject kwargs are gone by then; this context is still set because it is **never cleared at the end of forward**
  (the next ``route`` call overwrites it).
- Use DDP, not ``nn.DataParallel``: DataParallel's replica threads would share and race on the one object.
Only layers routed by task (``route: task``) read the context; input-routed layers need nothing from it.

The unknown task has id ``num_tasks``, the last row of every per-task table (num_tasks + 1 rows).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlm4st.adapters.errors import AdapterError


class RoutingContext:
    """The task ids of the current batch and, for embedding-gated adapters, their task embedding rows."""

    def __init__(self) -> None:
        self.task_ids: torch.Tensor | None = None  # (B,) long once set
        self.task_emb: torch.Tensor | None = None  # (B, task_dim), or None for adapters that select rows by id

    def set(self, task_ids: torch.Tensor, task_emb: torch.Tensor | None = None) -> None:
        """Install the routing of the coming forward pass (overwrites the previous one).

        ``task_emb`` is None for adapters whose layers select per-task rows by id instead of reading an embedding.
        """
        if task_emb is not None and task_emb.dim() != 2:
            raise AdapterError(f"RoutingContext.set: task_emb must be (B, task_dim), got {tuple(task_emb.shape)}")
        if task_emb is not None and task_ids.shape[0] != task_emb.shape[0]:
            raise AdapterError(
                f"RoutingContext.set: {task_ids.shape[0]} task ids but {task_emb.shape[0]} embedding rows"
            )
        self.task_ids = task_ids
        self.task_emb = task_emb

    def _check(self, batch_size: int, layer_name: str) -> None:
        if self.task_ids is None:
            raise AdapterError(
                f"routed LoRA layer '{layer_name}': the routing context is unset; the VLM module must call "
                "adapter.route(task_id) before the encoders run"
            )
        if self.task_ids.shape[0] != batch_size:
            raise AdapterError(
                f"routed LoRA layer '{layer_name}': input batch size {batch_size} differs from the "
                f"{self.task_ids.shape[0]} task ids given to adapter.route(); route each batch before its forward"
            )

    def embedding_for(self, batch_size: int, layer_name: str) -> torch.Tensor:
        """The (batch_size, task_dim) task embeddings for a layer whose input has ``batch_size`` samples."""
        self._check(batch_size, layer_name)
        if self.task_emb is None:
            raise AdapterError(
                f"routed LoRA layer '{layer_name}' reads a task embedding, but its adapter routed without one"
            )
        return self.task_emb  # (B, task_dim)

    def rows_for(self, table: torch.Tensor, batch_size: int, layer_name: str) -> torch.Tensor:
        """Each sample's row of a per-task table (num_tasks + 1, k): row t for task t (the last row is the
        unknown task). Equals one_hot(t) @ table, without building the one-hot.

        The lookup is ``F.embedding``, which rejects an id outside the table (a negative id would otherwise
        silently index from the end, i.e. pick the unknown row).
        """
        self._check(batch_size, layer_name)
        return F.embedding(self.task_ids.to(table.device), table)  # (B,) -> (B, k)
