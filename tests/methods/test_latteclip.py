"""LatteCLIP's arithmetic against a direct, loop-by-loop computation of the paper's equations (1)-(2), the
momentum update and the dual step; its options as the fine-tuning registry declares them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipclust.methods.contrastive import contrastive_loss, pseudo_labels
from clipclust.methods.latteclip import objective as lc


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_mixer_weights_are_top1_minus_top2_cosine(rng):
    texts, protos = rng.normal(size=(5, 3, 8)), rng.normal(size=(4, 8))
    got = lc.mixer_weights(torch.tensor(texts), torch.tensor(protos)).numpy()
    for i in range(5):
        for j in range(3):
            cos = [texts[i, j] @ p / np.linalg.norm(texts[i, j]) / np.linalg.norm(p) for p in protos]
            first, second = sorted(cos, reverse=True)[:2]
            assert got[i, j] == pytest.approx(first - second + 1e-6, abs=1e-5)


def test_mix_is_eq2_and_a_missing_text_weighs_nothing(rng):
    texts, protos = rng.normal(size=(4, 3, 8)), _unit(rng.normal(size=(5, 8)))
    labels = np.array([0, 3, 3, 1])
    present = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 0], [1, 0, 0]], dtype=bool)
    got = lc.mix(torch.tensor(texts), torch.tensor(present), torch.tensor(protos), torch.tensor(labels), 0.9).numpy()
    for i in range(4):
        feats = [_unit(texts[i, j]) for j in range(3) if present[i, j]]
        weights = []
        for f in feats:
            cos = sorted(protos @ f, reverse=True)
            weights.append(cos[0] - cos[1] + 1e-6)
        mean = sum(w * f for w, f in zip(weights, feats)) / sum(weights)
        np.testing.assert_allclose(got[i], 0.1 * mean + 0.9 * protos[labels[i]], atol=1e-5)


def test_mix_sends_gradient_to_the_texts_only_through_one_minus_alpha(rng):
    texts = torch.tensor(_unit(rng.normal(size=(2, 1, 8))), requires_grad=True)
    protos = torch.tensor(_unit(rng.normal(size=(3, 8))), requires_grad=True)
    out = lc.mix(texts, torch.ones(2, 1, dtype=torch.bool), protos, torch.tensor([0, 2]), 0.99)
    out[0, 0].backward()
    assert protos.grad is None  # the prototype bank is a constant of the step
    # d out / d text is (1 - alpha) times the Jacobian of the normalisation (the weights are detached)
    t = texts.detach()[0, 0]
    jac = (torch.eye(8) - torch.outer(t, t))[0] * 0.01
    torch.testing.assert_close(texts.grad[0, 0], jac, atol=1e-6, rtol=1e-4)


def test_one_momentum_step_is_the_paper_formula_and_moves_only_seen_classes(rng):
    protos = _unit(rng.normal(size=(4, 8)))
    mixed = rng.normal(size=(5, 8))
    labels = np.array([2, 0, 2, 2, 0])
    got = lc.momentum_update(torch.tensor(protos), torch.tensor(mixed), torch.tensor(labels), 0.99).numpy()
    for c in range(4):
        rows = mixed[labels == c]
        if len(rows) == 0:
            np.testing.assert_allclose(got[c], protos[c])
            continue
        expected = _unit(0.99 * protos[c] + 0.01 * rows.mean(0))
        np.testing.assert_allclose(got[c], expected, atol=1e-6)
        assert np.linalg.norm(got[c] - protos[c]) > 1e-4  # the prototype moved


def test_dual_step_sums_both_sources_and_updates_prototypes_for_each(rng):
    n, d, c = 6, 8, 3
    images = torch.tensor(rng.normal(size=(n, d)))
    class_zs, class_ft = torch.tensor(rng.normal(size=(n, d))), torch.tensor(rng.normal(size=(n, d)))
    described = torch.tensor(rng.normal(size=(n, 2, d)))
    present = torch.tensor(rng.random((n, 2)) > 0.3)
    protos = torch.tensor(_unit(rng.normal(size=(c, d))))
    zs, ft = torch.tensor([0, 1, 2, 0, 1, 2]), pseudo_labels(images, protos)
    scale = torch.tensor(np.log(100.0))
    loss, bank = lc.dual_step(images, class_zs, class_ft, described, present, protos, zs, ft, scale)
    always = torch.ones(n, 1, dtype=torch.bool)
    m_zs = lc.mix(torch.cat([class_zs[:, None], described], 1), torch.cat([always, present], 1), protos, zs)
    m_ft = lc.mix(torch.cat([class_ft[:, None], described], 1), torch.cat([always, present], 1), protos, ft)
    expected = contrastive_loss(images, m_zs, scale) + contrastive_loss(images, m_ft, scale)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    torch.testing.assert_close(bank, lc.momentum_update(lc.momentum_update(protos, m_zs, zs), m_ft, ft))
    assert ft.tolist() == (_unit(images.numpy()) @ protos.numpy().T).argmax(1).tolist()


def test_options_are_checked_and_filled():
    from clipclust.errors import InputError
    from clipclust.methods.finetuning import get_finetune_method, resolve_finetune_options

    spec = get_finetune_method("latteclip")
    resolved = resolve_finetune_options(spec, {"texts": "image, class", "alpha": 0.5})
    assert resolved == {"texts": ("class", "image"), "image_descriptions": None, "group_descriptions": None,
                        "alpha": 0.5, "momentum": lc.MOMENTUM}
    with pytest.raises(InputError, match="include 'class'") as no_class:
        resolve_finetune_options(spec, {"texts": "image"})
    assert no_class.value.option == "texts"
    with pytest.raises(InputError, match="expected a number from 0 to 1"):
        resolve_finetune_options(spec, {"momentum": 1.5})
