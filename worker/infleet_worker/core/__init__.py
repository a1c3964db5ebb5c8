"""The engine core: one process per model that batches rows from every front end."""
