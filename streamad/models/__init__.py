"""Time-series models for many series at once (`SeriesBank`)."""

from streamad.models.bank import ModelEvent, ModelParams, Scores, SeriesBank

__all__ = ["ModelEvent", "ModelParams", "Scores", "SeriesBank"]
