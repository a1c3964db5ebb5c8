"""The torch engine: loads a model and runs batches on it."""
