"""Shared fixtures: real redis-server processes and worker builders (tests/ is on the path)."""

pytest_plugins = ["redis_fixtures", "worker_fixtures"]
