"""Parquet manifests: schemas (the contract), atomic writing, and validation."""
