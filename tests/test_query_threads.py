"""A query-sized encode runs torch on Encoder.query_threads threads (one by default): with torch's
default two threads, a single query on two busy cores took 196-488 ms instead of 13-20 ms."""

from __future__ import annotations

import torch

from funnel.layers import LayeredEncoder
from funnel.models import QUERY_TEXTS


def threads_seen_by_the_model(encoder, run) -> list[int]:
    seen: list[int] = []
    hook = encoder.model[0].auto_model.embeddings.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run()
    finally:
        hook.remove()
        after = torch.get_num_threads()
        torch.set_num_threads(before)
    assert after == 2  # the caller's setting is restored
    return seen


def test_a_query_encodes_on_one_thread_and_a_corpus_batch_on_the_callers_setting(encoder):
    queries = ["play a puzzle game over the network"]
    passages = ["a package description"] * (QUERY_TEXTS + 1)
    assert threads_seen_by_the_model(encoder, lambda: (encoder.encode(queries), encoder.encode(passages))) == [1, 2]


def test_the_layered_encoder_does_the_same(encoder):
    layered = LayeredEncoder(encoder)
    seen = threads_seen_by_the_model(encoder, lambda: layered.encode(["fonts for writing Chinese"], layer=2))
    assert seen == [1]
