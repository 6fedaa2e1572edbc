"""What the text-generation tests share: a constrained colour question and a fake server's model list."""

from __future__ import annotations

from clipclust.models.llm import GenerationRequest, chat

MODELS_REPLY = {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}

COLOURS = ("red", "green", "blue")


def colour_request(thing: str, constrained: bool = True) -> GenerationRequest:
    return GenerationRequest(
        chat(f"What colour is {thing}? Answer with one word.", system="You answer with one colour."),
        COLOURS if constrained else None,
    )
