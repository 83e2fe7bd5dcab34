"""Data: sources, reflection synthesis, Parquet shards and readers."""
