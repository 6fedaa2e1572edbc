"""Hidden states and the logit lens: tiny random models for the plumbing, SmolLM2 (GGUF) for real tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipclust.errors import InputError
from clipclust.models.hidden import load_hidden_model, model_source

from .conftest import smollm2_path

PROMPTS = ["the cat is red", "a small dog with a blue car is", "this photo of the bird is"]


@pytest.fixture(scope="module")
def tiny_lm(tiny_causal_lm_dir: Path):
    return load_hidden_model(tiny_causal_lm_dir, device="cpu", batch_size=2)


def test_states_are_per_item_whatever_the_batch_and_padding(tiny_lm) -> None:
    together = tiny_lm.states(PROMPTS, [0, 1, 2], [-1, -2])
    assert together.shape == (3, 3, 2, 32) and together.dtype == np.float32
    for i, prompt in enumerate(PROMPTS):
        alone = tiny_lm.states([prompt], [0, 1, 2], [-1, -2])
        np.testing.assert_allclose(alone[0], together[i], atol=1e-5)
    np.testing.assert_array_equal(tiny_lm.states(PROMPTS, [2], [-1]), together[:, 2:3, :1])
    # layer 1 alone stops the pass after layer 1 (hooks) and must equal the full pass's hidden_states[1]
    ran_layer_2: list[int] = []
    handle = tiny_lm.model.model.layers[1].register_forward_hook(lambda *args: ran_layer_2.append(1))
    try:
        np.testing.assert_allclose(tiny_lm.states(PROMPTS, [1], [-1, -2])[:, 0], together[:, 1], atol=1e-6)
    finally:
        handle.remove()
    assert ran_layer_2 == []


def test_lens_of_the_final_layer_is_the_models_own_next_token_distribution(tiny_lm) -> None:
    import torch

    inputs = tiny_lm.tokenizer(PROMPTS[:1], return_tensors="pt")
    with torch.no_grad():
        logits = tiny_lm.model(**inputs).logits[0, -1]
    final = tiny_lm.states(PROMPTS[:1], [2], [-1])[:, 0, 0]
    lens = tiny_lm.lens(final, 2)[0]
    np.testing.assert_allclose(lens.numpy(), torch.softmax(logits, -1).numpy(), atol=1e-5)
    # an earlier layer goes through the final norm first, as the model's last layer does
    middle = tiny_lm.states(PROMPTS[:1], [1], [-1])[:, 0, 0]
    norm, head = tiny_lm.model.model.norm, tiny_lm.model.lm_head
    with torch.no_grad():
        expected = torch.softmax(head(norm(torch.from_numpy(middle))), -1)
    np.testing.assert_allclose(tiny_lm.lens(middle, 1).numpy(), expected.numpy(), atol=1e-5)
    ids, probs = tiny_lm.lens_top(final, 2, 4)
    assert ids.shape == probs.shape == (1, 4) and np.all(np.diff(probs[0]) <= 0)


def test_layers_and_positions_out_of_range_are_refused(tiny_lm) -> None:
    with pytest.raises(InputError, match="layers 0..2"):
        tiny_lm.states(PROMPTS, [3], [-1])
    with pytest.raises(ValueError, match="from the end"):
        tiny_lm.states(PROMPTS, [1], [0])


def test_model_specs_that_cannot_be_models_say_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="GGUF file not found"):
        model_source(tmp_path / "missing.gguf")
    with pytest.raises(InputError, match="no config.json"):
        model_source(tmp_path)
    with pytest.raises(InputError, match="hf:ORG/NAME"):
        model_source("hf:not a name")


def test_image_text_model_reads_one_image_per_prompt(tiny_vlm_dir: Path) -> None:
    model = load_hidden_model(tiny_vlm_dir, images=True, device="cpu", batch_size=2)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(3)]
    prompts = ["the color of the car is"] * 3
    states = model.states(prompts, [1, 2], [-1], images=images)
    assert states.shape == (3, 2, 1, 32)
    assert np.abs(states[0] - states[1]).max() > 1e-4  # the image reaches the text positions
    np.testing.assert_allclose(model.states(prompts[2:], [1, 2], [-1], images=images[2:])[0], states[2], atol=1e-5)
    ids, _ = model.lens_top(states[:, 1, 0], 2, 3)
    assert ids.shape == (3, 3)
    with pytest.raises(ValueError, match="one image per prompt"):
        model.states(prompts, [1], [-1])


@pytest.fixture(scope="module")
def smollm2():
    return load_hidden_model(smollm2_path(), device="cpu")


def test_logit_lens_of_real_smollm2_names_the_sky_blue_at_a_late_layer(smollm2) -> None:
    assert smollm2.n_layers == 30 and smollm2.identity.startswith("gguf:sha256:")
    states = smollm2.states(["The color of the sky is"], [28, 30], [-1])
    ids, _ = smollm2.lens_top(states[:, 0, 0], 28, 5)
    assert " blue" in smollm2.token_texts(ids[0])
    # applying the final norm a second time to the already-normalised last layer gives other tokens
    import torch

    twice = torch.softmax(smollm2.model.lm_head(smollm2.model.model.norm(torch.from_numpy(states[:, 1, 0]))), -1)
    once = smollm2.lens(states[:, 1, 0], 30)
    assert not torch.allclose(twice, once, atol=1e-3)
    assert smollm2.token_texts(smollm2.keyword_tokens(["blue"]))[:2] == [" blue", " Blue"]


OBJECTS = ["A red car parked on a street.", "A blue sports car on a race track.", "An old truck driving on a highway.",
           "A white van parked in front of a house.", "A small bird perched on a branch.",
           "A parrot with green feathers.", "An owl sitting in a tree at night.", "A seagull flying over the sea."]


def test_llama_cpp_reader_gives_transformers_states_and_the_same_clustering(smollm2) -> None:
    """The last layer read by llama.cpp from the quantised file and by transformers from its dequantised copy:
    the same vector up to rounding, the same top lens token, the same k-means partition."""
    from sklearn.metrics import adjusted_rand_score

    from clipclust.core.clustering import cluster
    from clipclust.methods.esmc.features import DEFAULT_TEXT_TEMPLATE, criterion_prompt, hidden_features
    from clipclust.models.hidden_llama import LlamaHiddenReader

    prompts = [criterion_prompt(DEFAULT_TEXT_TEMPLATE, "object", d) for d in OBJECTS]
    reader = load_hidden_model(smollm2_path(), reader="llama.cpp")
    try:
        assert isinstance(reader, LlamaHiddenReader) and reader.n_layers == smollm2.n_layers == 30
        assert reader.identity.startswith("llama.cpp:sha256:") and reader.identity[10:] == smollm2.identity[5:]
        ours, our_ids, our_probs = reader.read(prompts, 30, -1, 8)
        theirs, their_ids, their_probs = smollm2.read(prompts, 30, -1, 8)
        cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
        assert cosine.min() > 0.99, cosine
        assert (our_ids[:, 0] == their_ids[:, 0]).all() and np.abs(our_probs[:, 0] - their_probs[:, 0]).max() < 0.05
        assert reader.token_texts(our_ids[0][:3]) == smollm2.token_texts(their_ids[0][:3])
        ids = [cluster(hidden_features(x), "kmeans", 2, 0).ids for x in (ours, theirs)]
        assert adjusted_rand_score(*ids) == 1.0
        # an item's state depends on its own prompt only, and the second-last token is reachable too
        np.testing.assert_array_equal(reader.read(prompts[5:6], 30, -1, 8)[0][0], ours[5])
        assert not np.allclose(reader.read(prompts[:1], 30, -2, 8)[0][0], ours[0])
        with pytest.raises(InputError, match=r"last layer \(30\) only, not layer 12"):
            reader.read(prompts[:1], 12, -1, 8)
    finally:
        reader.close()
