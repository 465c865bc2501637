"""Errors raised by adapters at run time (config mistakes raise ``vlm4st.config.ConfigError``)."""

from __future__ import annotations


class AdapterError(RuntimeError):
    """An adapter is used wrongly: unset routing, task ids out of range, a merge of a routed adapter, ..."""
