"""Scoring forecasts: streamed metrics (``metrics``) and the naive forecasters every model is compared with
(``baselines``). Training imports this package; it imports nothing from training."""

from vlm4st.evaluation.baselines import BASELINES, evaluate_baselines
from vlm4st.evaluation.metrics import ForecastMetrics

__all__ = ["BASELINES", "ForecastMetrics", "evaluate_baselines"]
