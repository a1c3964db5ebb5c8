"""Shared Redis output / embedding cache.

The worker server uses :func:`infleet_worker.cache.factory.build_cache`; the
request path only sees the :class:`~infleet_worker.cache.base.ResultCache` protocol.
"""
