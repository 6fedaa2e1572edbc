"""Templates, class lists, class maps and built-in prompt sets."""

from __future__ import annotations

import pytest

from clipclust.errors import InputError
from clipclust.core.templates import GENERIC_32, check_template, fill, parse_classes, read_class_map, read_prompt_set


def test_fill_and_builtin_generic_set():
    assert fill("This is digit <>", "3") == "This is digit 3"
    assert len(GENERIC_32) == 32 and len(set(GENERIC_32)) == 32
    identity, prompts = read_prompt_set("builtin:generic-32")
    assert identity == "builtin:generic-32" and prompts[0] == "a photo of an object" and prompts[-1] == "a centered object"
    with pytest.raises(InputError, match="known: builtin:generic-32"):
        read_prompt_set("builtin:nope")


def test_classes_from_text_and_file(tmp_path):
    assert parse_classes("a, b,c") == ["a", "b", "c"]
    (tmp_path / "c.txt").write_text("# comment\nx\n\ny\n")
    assert parse_classes(file=str(tmp_path / "c.txt")) == ["x", "y"]
    assert parse_classes() is None
    for bad in ("a,a", " , "):
        with pytest.raises(InputError):
            parse_classes(bad)
    with pytest.raises(InputError, match="^pass either classes or classes_file, not both$"):
        parse_classes("a", str(tmp_path / "c.txt"))


def test_an_empty_template_names_the_setting_it_came_from():
    assert check_template("a <>") == "a <>"
    with pytest.raises(InputError, match="^empty prompts; give a template such as 'This is digit <>'$"):
        check_template("  ")
    with pytest.raises(InputError) as caught:
        check_template("", option="templates")
    assert caught.value.render(lambda name: f"--{name[:-1]}", lambda c, a: c).startswith("empty --template;")


def test_class_map_csv_and_json(tmp_path):
    (tmp_path / "m.csv").write_text("label,group\n0,even\n1,odd\n")
    (tmp_path / "m.json").write_text('{"0": "even", "1": "odd"}')
    assert read_class_map(str(tmp_path / "m.csv")) == read_class_map(str(tmp_path / "m.json")) == {"0": "even", "1": "odd"}
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(InputError):
        read_class_map(str(tmp_path / "bad.json"))
