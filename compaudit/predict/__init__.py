"""Population inference: every replica of every variant → rows of predictions.parquet."""

from compaudit.predict.population import StackMode, predict_population, write_predictions

__all__ = ["StackMode", "predict_population", "write_predictions"]
