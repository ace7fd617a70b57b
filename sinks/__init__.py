"""privacy-pipeline sinks: ClickHouse analytics and ML-training Parquet."""
