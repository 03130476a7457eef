"""Where a funnel index can live besides its own folder: Qdrant for serving, Ray for building.

Each backend is imported on first use (``from funnel.backends.qdrant import ...``) so that
``import funnel`` does not pay for qdrant-client or Ray.
"""
