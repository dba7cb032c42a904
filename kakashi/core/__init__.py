"""The public homes of the concepts on the Async Backends page.

``kakashi.core.records`` (levels, records) and ``kakashi.core.pipeline`` (pipeline
configuration and the standard stages).
"""
