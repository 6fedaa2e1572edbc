"""Tiny sentence-transformers models built on the spot (a one-layer BERT over a few dozen words), so that the
text route's tests never download: a plain embedder and one whose config declares an instruction prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

WORDS = ("red green blue yellow cat dog bird fish horse car truck ship plane a the of and is in on with photo image "
         "small big bright dark animal vehicle color sky road water cluster by query instruct represent text for "
         "this or").split()
INSTRUCT_PROMPTS = {"query": "Instruct: Retrieve similar passages\nQuery: ", "document": ""}


def build_tiny_sentence_model(folder: Path, prompts: dict[str, str] | None = None, seed: int = 0) -> Path:
    """A sentence-transformers folder (BERT, 16 dims, mean pooling); ``prompts`` go into its config as a
    published model declares them."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    raw = folder / "bert"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ":", ",", ".", "'"]
                                             + WORDS) + "\n")
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(WORDS) + 9, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(raw)
    BertTokenizerFast(vocab_file=str(raw / "vocab.txt")).save_pretrained(raw)
    model = SentenceTransformer(modules=[Transformer(str(raw), max_seq_length=48), Pooling(16, "mean")],
                                prompts=prompts or {})
    model.save(str(folder / "st"))
    return folder / "st"


@pytest.fixture(scope="session")
def tiny_text_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"plain": a model that takes no instruction, "prompted": one whose config declares an Instruct prompt}."""
    root = tmp_path_factory.mktemp("text-models")
    return {"plain": build_tiny_sentence_model(root / "plain"),
            "prompted": build_tiny_sentence_model(root / "prompted", INSTRUCT_PROMPTS, seed=1)}
