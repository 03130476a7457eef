import pytest
import torch

from funnel.errors import InputError
from funnel.training.losses import StarbucksLoss, layer_features, pool_layer, shrink


def test_starbucks_loss_is_the_weighted_sum_over_pairs(tiny_model):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    anchors = ["fast image viewer", "tool to compress files", "python web framework", "music player"]
    positives = ["a small program showing pictures", "zip and unzip archives", "build sites in python", "play mp3 songs"]
    features = [tiny_model.preprocess(anchors), tiny_model.preprocess(positives)]
    base = MultipleNegativesRankingLoss(tiny_model)
    pairs, weights = [(1, 16), (2, 32), (2, 64)], [2.0, 1.0, 0.5]
    tiny_model.eval()  # no dropout, so both computations see the same network
    with torch.no_grad():
        loss = StarbucksLoss(tiny_model, base, pairs, weights)(features, torch.tensor([]))
        hidden = [layer_features(tiny_model, f) for f in features]
        manual = sum(
            w * base.compute_loss_from_embeddings([shrink(pool_layer(tiny_model, h, layer), dim) for h in hidden], None)
            for (layer, dim), w in zip(pairs, weights)
        )
        full = base(features, None)
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)
    assert StarbucksLoss(tiny_model, base, [(2, 64)])(features, torch.tensor([])).item() == pytest.approx(full.item(), rel=1e-5)


def test_starbucks_rejects_pairs_the_model_lacks(tiny_model):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    base = MultipleNegativesRankingLoss(tiny_model)
    with pytest.raises(InputError, match=r"pairs \[\(3, 32\)\] do not fit a model of 2 layers and 64 dims"):
        StarbucksLoss(tiny_model, base, [(1, 16), (3, 32)])
    with pytest.raises(InputError, match="2 weights for 1 layer:dim pairs"):
        StarbucksLoss(tiny_model, base, [(1, 16)], [1.0, 2.0])


def test_distillation_is_zero_for_the_teacher_itself_and_positive_for_a_prefix(tiny_model):
    import copy

    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    from funnel.training.losses import SimilarityDistillationLoss

    anchors = ["fast image viewer", "tool to compress files", "python web framework", "music player"]
    positives = ["a small program showing pictures", "zip and unzip archives", "build sites in python", "play mp3 songs"]
    features = [tiny_model.preprocess(anchors), tiny_model.preprocess(positives)]
    tiny_model.eval()
    distill = SimilarityDistillationLoss(tiny_model, copy.deepcopy(tiny_model), temperature=0.05)
    full = distill(features, None)
    assert full.item() == pytest.approx(0.0, abs=1e-5), "a student equal to its teacher has nothing to learn"
    nested = MatryoshkaLoss(tiny_model, distill, [64, 16])(features, None)
    assert nested.item() > 1e-3, "a 16-dim prefix does not reproduce the teacher's similarities"
    nested.backward()
    assert all(p.grad is None for p in distill.teacher.parameters()), "the teacher stays fixed"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_model.parameters())


def test_align_and_rank_is_mse_plus_a_ranking_term_over_texts_with_documents(tiny_model):
    import torch.nn.functional as F

    from funnel.training.losses import AlignAndRankLoss

    features = tiny_model.tokenize(["fonts for the console", "a puzzle game", "xml parser", "disk usage"])
    embeddings = tiny_model(dict(features))["sentence_embedding"].detach()
    documents = F.normalize(torch.randn(4, 64), dim=-1)
    documents[3] = 0  # a text cut from no document: in the MSE, not in the ranking
    labels = torch.cat([embeddings + 0.1, documents], dim=1)
    mse = F.mse_loss(embeddings, embeddings + 0.1)
    assert AlignAndRankLoss(tiny_model, 0.0)([features], labels).item() == pytest.approx(mse.item(), rel=1e-4)
    scores = F.normalize(embeddings[:3], dim=-1) @ documents[:3].T / 0.05
    ranked = mse + 0.5 * F.cross_entropy(scores, torch.arange(3))
    assert AlignAndRankLoss(tiny_model, 0.5)([features], labels).item() == pytest.approx(ranked.item(), rel=1e-4)
