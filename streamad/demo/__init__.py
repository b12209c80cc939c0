"""The demo: generated web-server logs with planted incidents, and a Kibana-like anomalies table."""
