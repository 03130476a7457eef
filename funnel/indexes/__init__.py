"""Index storage: an index folder is immutable segments plus a manifest replaced atomically.

``manifest`` (layout, checksums), ``segment`` (one segment: streaming, resumable writer; loader),
``shortlist`` (FAISS indexes over leading dims), ``builder`` (build a new index, resumably),
``updates`` (add, delete, compact), ``lock`` (one writer at a time), ``verify`` (full check),
``index`` (a loaded, read-only version to search).
"""
