"""streamad: Elastic ML anomaly detection jobs, run on Kafka event streams."""

__version__ = "0.1.0"
