"""The fine-tuning method registry: built-in methods found by name, options checked against the method that
declares them, and what a method records by default."""

from __future__ import annotations

import pytest

from clipclust.errors import InputError
from clipclust.methods.finetuning import (FINETUNE_METHODS, FinetuneMethod, finetune_methods, get_finetune_method,
                                          resolve_finetune_options)
from clipclust.methods.registry import Option, resolve_options


@pytest.fixture()
def toy(monkeypatch) -> FinetuneMethod:
    finetune_methods()
    spec = FinetuneMethod("toy", "Toy", "for tests", objective=lambda options: None, options=(
        Option("mode", default="a", choices=("a", "b")), Option("sizes", default=(1, 2), type=int),
        Option("threads", default=1, type=int, identity=False)))
    monkeypatch.setitem(FINETUNE_METHODS, "toy", spec)
    return spec


def test_built_in_methods_register_themselves_in_order():
    assert list(finetune_methods())[:2] == ["latteclip", "flyp"]
    with pytest.raises(InputError, match="unknown fine-tuning method 'reclip': expected latteclip or flyp") as bad:
        get_finetune_method("reclip")
    assert bad.value.option == "method"


def test_options_are_checked_against_the_method_that_declares_them(toy):
    assert resolve_finetune_options(toy, {"mode": "b", "threads": None}) == {"mode": "b", "sizes": (1, 2), "threads": 1}
    with pytest.raises(InputError, match="'c': expected one of a, b") as wrong:
        resolve_finetune_options(toy, {"mode": "c"})
    assert wrong.value.option == "mode"
    with pytest.raises(InputError, match="applies to the latteclip method, not toy"):
        resolve_finetune_options(toy, {"alpha": 0.5})
    with pytest.raises(InputError, match="is not a setting of any method"):
        resolve_finetune_options(toy, {"beta": 0.5})


def test_the_registry_passed_is_the_one_that_names_an_options_owner(toy):
    """One resolver for both registries: each refuses a foreign option naming its own methods, never the other's."""
    from clipclust.methods import METHODS, load_builtin_methods

    load_builtin_methods()
    with pytest.raises(InputError, match="^criterion: is not a setting of any method, not toy$") as clustering:
        resolve_finetune_options(toy, {"criterion": "mood"})  # a clustering option, unknown to fine-tuning
    assert clustering.value.option == "criterion"
    with pytest.raises(InputError, match="^alpha: is not a setting of any method, not kmeans$"):
        resolve_options(METHODS["kmeans"], {"alpha": 0.5}, METHODS)  # a fine-tuning option, unknown to clustering
    with pytest.raises(InputError, match="^mode: applies to the toy method, not kmeans$"):
        resolve_options(METHODS["kmeans"], {"mode": "a"}, FINETUNE_METHODS)


def test_a_method_records_its_identity_options_unless_it_says_what_to_record(toy):
    options = resolve_finetune_options(toy, {})
    assert toy.record(options, {}) == {"mode": "a", "sizes": [1, 2]}  # JSON values; threads is how, not what
    latteclip = get_finetune_method("latteclip")
    recorded = latteclip.record(resolve_finetune_options(latteclip, {"texts": "class,image"}), {"image": "d (id 1)"})
    assert recorded == {"texts": ["class", "image"], "alpha": 0.99, "momentum": 0.99, "image_descriptions": "d (id 1)",
                        "group_descriptions": ""}
