"""The format table inputs and outputs share."""

from __future__ import annotations

from pathlib import Path

from squall import formats, inputs, outputs


def test_names_and_aliases_give_the_format() -> None:
    assert formats.format_named("JSONL") == "jsonl"
    assert formats.format_named(".csv") == "csv"
    assert formats.format_named("ndjson") == "jsonl"
    assert formats.format_named("jsonlines") == "jsonl"
    assert formats.format_named("xlsx") is None


def test_extensions_give_the_format() -> None:
    assert formats.format_of_path(Path("a/b.JSON")) == "jsonl"
    assert formats.format_of_path(Path("b.pq")) == "parquet"
    assert formats.format_of_path(Path("b.tsv")) == "tsv"
    assert formats.format_of_path(Path("b.txt")) is None
    assert formats.format_of_path(Path("noext")) is None


def test_a_gz_suffix_is_looked_through_only_when_asked() -> None:
    assert formats.format_of_path(Path("in.csv.gz"), compressed=True) == "csv"
    assert formats.format_of_path(Path("in.csv.gz")) is None
    assert formats.format_of_path(Path(".gz"), compressed=True) is None


def test_only_jsonl_holds_batch_lines() -> None:
    assert [k for k in formats.FORMATS if formats.holds_batch_lines(k)] == ["jsonl"]


def test_every_extension_and_delimiter_names_a_known_format() -> None:
    assert set(formats.EXTENSIONS.values()) == set(formats.FORMATS)
    assert set(formats.ALIASES.values()) <= set(formats.FORMATS)
    assert set(formats.DELIMITERS) == {"csv", "tsv"}


def test_inputs_and_outputs_share_the_one_table() -> None:
    assert inputs.FORMATS is formats.FORMATS
    assert outputs.FORMATS is formats.FORMATS
