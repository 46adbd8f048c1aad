"""Reading rows from JSONL, CSV, Parquet, DataFrames, lists and iterables."""

from __future__ import annotations

import gzip
import json
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from squall.errors import InputError, MissingExtraError
from squall.inputs import InputSource, open_input
from squall.records import Row


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def batch_line(custom_id: str, content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": content}]},
        **extra,
    }


def all_rows(source: InputSource) -> list[Row]:
    return list(source.rows())


# --- JSONL ---------------------------------------------------------------------------------


def test_jsonl_keeps_types_and_true_line_numbers_across_blank_lines(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "in.jsonl",
        ['{"prompt": "a", "n": 1, "x": 1.5}', "", "   ", '{"prompt": "b", "tags": ["t"]}'],
    )
    rows = all_rows(open_input(path))
    assert [(r.index, r.line) for r in rows] == [(0, 1), (1, 4)]
    assert rows[0].data == {"prompt": "a", "n": 1, "x": 1.5}
    assert rows[1].data["tags"] == ["t"]


def test_jsonl_can_be_read_again_from_the_start(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [json.dumps({"prompt": str(i)}) for i in range(5)])
    source = open_input(path)
    first, second = all_rows(source), all_rows(source)
    assert first == second and len(first) == 5
    assert source.name == str(path) and source.path == path
    assert source.count() is None


def test_malformed_json_line_names_file_line_and_json_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", ['{"prompt": "a"}', '{"prompt": "b",}'])
    with pytest.raises(InputError) as info:
        all_rows(open_input(path))
    assert info.value.file == str(path) and info.value.line == 2
    assert f"{path}, line 2: is not valid JSON: " in str(info.value)
    assert "column 16" in str(info.value)


def test_malformed_jsonl_line_is_reported_at_the_column_of_its_fault(tmp_path: Path) -> None:
    # A line cut short is at fault at its end (column 17 here), not at "column 1" of the
    # empty text after its line break, where the JSON decoder would count from.
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"prompt": "a"}\n{"prompt": "abc"\r\n{"prompt": "b"}\n')
    with pytest.raises(InputError) as info:
        all_rows(open_input(path))
    assert info.value.line == 2
    assert "Expecting ',' delimiter at column 17 (the end of the line)" in str(info.value)
    # Columns count characters, not bytes: the x after a three-byte character is column 17.
    path.write_bytes(b'{"prompt": "\xe8\xae\xa1", x}\n')
    with pytest.raises(InputError, match=r"line 1: .* at column 17$"):
        all_rows(open_input(path))


def test_unterminated_jsonl_string_is_named_as_such(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", ['{"prompt": "abc'])
    with pytest.raises(InputError, match=r"Unterminated string starting at column 12$"):
        all_rows(open_input(path))


def test_jsonl_line_that_is_not_an_object_is_an_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", ['{"prompt": "a"}', "", '["a", "b"]'])
    with pytest.raises(InputError, match=r"line 3: is a JSON array, not an object") as info:
        all_rows(open_input(path))
    assert info.value.line == 3


def test_non_utf8_byte_names_line_and_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "\xc4\xe3"}\n')
    with pytest.raises(InputError) as info:
        all_rows(open_input(path))
    message = str(info.value)
    assert info.value.line == 2
    assert "byte 0xc4 at byte 13 of the line (byte 29 of the file) is not UTF-8" in message
    assert "iconv" in message and "UTF-8" in message


def test_utf8_bom_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "\xe4\xbd\xa0\xe5\xa5\xbd"}\n')
    assert all_rows(open_input(path))[0].data == {"prompt": "你好"}


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_jsonl_says_it_has_no_rows(tmp_path: Path, content: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(content, encoding="utf-8")
    source = open_input(path)
    with pytest.raises(InputError, match=r"in\.jsonl: has no rows"):
        all_rows(source)
    with pytest.raises(InputError, match="has no rows"):
        source.first_row()


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.jsonl: no such file") as info:
        open_input(tmp_path / "nope.jsonl")
    assert info.value.file == str(tmp_path / "nope.jsonl")


def test_directory_is_not_an_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        open_input(tmp_path)


def test_file_removed_between_passes_says_so(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", ['{"prompt": "a"}'])
    source = open_input(path)
    path.unlink()
    with pytest.raises(InputError, match="no such file"):
        all_rows(source)


def test_unknown_extension_asks_for_a_format(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.txt", ['{"prompt": "a"}'])
    with pytest.raises(InputError, match=r"\.jsonl, \.csv, \.tsv or \.parquet"):
        open_input(path)
    assert all_rows(open_input(path, fmt="jsonl"))[0].data == {"prompt": "a"}
    with pytest.raises(InputError, match="unknown input format 'xml'"):
        open_input(path, fmt="xml")


def test_json_lines_in_a_json_file_are_read(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.json", ['{"prompt": "a"}', '{"prompt": "b"}'])
    assert len(all_rows(open_input(path))) == 2


def test_json_array_file_suggests_converting_to_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text('[{"prompt": "a"}]', encoding="utf-8")
    with pytest.raises(InputError, match=r"line 1: is a JSON array; .*jq -c"):
        all_rows(open_input(path))


def test_gzipped_jsonl_is_read(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('{"prompt": "a"}\n{"prompt": "b"}\n')
    assert [r.data["prompt"] for r in open_input(path).rows()] == ["a", "b"]


def test_name_overrides_how_the_source_is_shown(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", ["oops"])
    with pytest.raises(InputError, match=r"^data\.jsonl, line 1"):
        all_rows(open_input(path, name="data.jsonl"))


def test_reading_200k_jsonl_rows_streams_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(200_000):
            f.write(f'{{"prompt": "计算 {i} + {i} 的结果", "id": {i}}}\n')
    rows = open_input(path).rows()
    # Trace the first row (a reader that loads the file shows it here) and the last 20k
    # (a reader that keeps rows shows them growing); tracing all 200k would be slow.
    tracemalloc.start()
    try:
        assert next(rows).line == 1
        first_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    for _ in range(179_999):
        next(rows)
    tracemalloc.start()
    try:
        last = -1
        for row in rows:
            last = row.data["id"]
        tail_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert last == 199_999
    # 20k rows kept as dicts take ~6 MB; streaming holds a line or two and the file buffer.
    assert first_peak < 1_000_000, first_peak
    assert tail_peak < 1_000_000, tail_peak


# --- CSV -----------------------------------------------------------------------------------


def test_csv_values_stay_strings_and_lines_count_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        'expression,answer\n1 + 2,3\n"multi\nline",4\n\n计算,5\n', encoding="utf-8", newline=""
    )
    rows = all_rows(open_input(path))
    assert [r.data for r in rows] == [
        {"expression": "1 + 2", "answer": "3"},
        {"expression": "multi\nline", "answer": "4"},
        {"expression": "计算", "answer": "5"},
    ]
    assert [r.line for r in rows] == [2, 3, 6]


def test_ragged_csv_row_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n1,2\n3,4,5\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"line 3: has 3 fields but the header has 2") as info:
        all_rows(open_input(path))
    assert info.value.line == 3


def test_csv_header_only_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(InputError, match="has a header but no rows"):
        all_rows(open_input(path))


def test_empty_csv_says_it_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="is empty"):
        all_rows(open_input(path))


def test_csv_duplicate_header_names_the_column(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b,a\n1,2,3\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"line 1, field 'a': the header names this column twice"):
        all_rows(open_input(path))


def test_csv_non_utf8_names_line_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"prompt\nok\n" + "计算".encode("gbk") + b"\n")
    with pytest.raises(InputError, match=r"line 3: byte 0xbc at byte 1 of the line \(byte 10 "):
        all_rows(open_input(path))


def test_csv_with_bom_and_a_huge_field(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    big = "x" * 300_000
    path.write_bytes(b"\xef\xbb\xbfprompt\n" + big.encode() + b"\n")
    rows = all_rows(open_input(path))
    assert rows[0].data == {"prompt": big}


def test_tsv_splits_on_tabs(tmp_path: Path) -> None:
    path = tmp_path / "in.tsv"
    path.write_text("a\tb\n1,2\t3\n", encoding="utf-8")
    assert all_rows(open_input(path))[0].data == {"a": "1,2", "b": "3"}


# --- Parquet -------------------------------------------------------------------------------


def test_parquet_keeps_types_and_counts_from_the_footer(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    table = pa.table({"prompt": [f"p{i}" for i in range(3000)], "n": list(range(3000))})
    pq.write_table(table, path, row_group_size=700)
    source = open_input(path)
    rows = all_rows(source)
    assert source.count() == 3000
    assert len(rows) == 3000
    assert rows[2999] == Row(2999, 3000, {"prompt": "p2999", "n": 2999})


def test_file_that_is_not_parquet_says_so(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    path.write_text("not parquet", encoding="utf-8")
    with pytest.raises(InputError, match="is not a readable Parquet file"):
        all_rows(open_input(path))


def test_parquet_without_pyarrow_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"prompt": ["a"]}), path)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingExtraError, match=r'pip install "squall\[parquet\]"'):
        open_input(path)


def test_empty_parquet_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], type=pa.string())}), path)
    with pytest.raises(InputError, match="has no rows"):
        all_rows(open_input(path))


# --- in-memory sources ---------------------------------------------------------------------


def test_list_of_strings_becomes_prompts() -> None:
    source = open_input(["一", "two"])
    assert source.name == "<list>" and source.count() == 2 and source.path is None
    assert all_rows(source) == [Row(0, 1, {"prompt": "一"}), Row(1, 2, {"prompt": "two"})]


def test_list_of_dicts_and_a_bad_item() -> None:
    assert all_rows(open_input([{"prompt": "a"}]))[0].data == {"prompt": "a"}
    with pytest.raises(InputError, match=r"<list>, line 2: is a int"):
        all_rows(open_input([{"prompt": "a"}, 5]))


def test_empty_list_has_no_rows() -> None:
    with pytest.raises(InputError, match="<list>: has no rows"):
        all_rows(open_input([]))


def test_a_dict_is_not_a_source() -> None:
    with pytest.raises(InputError, match="cannot read rows from a dict"):
        open_input({"prompt": "a"})


def test_one_shot_iterator_is_replayed_from_a_spool() -> None:
    pulled: list[int] = []

    def gen() -> Iterator[dict[str, Any]]:
        for i in range(10):
            pulled.append(i)
            yield {"prompt": f"p{i}", "n": i}

    source = open_input(gen())
    assert source.name == "<iterable>"
    assert source.first_row().data == {"prompt": "p0", "n": 0}
    assert source.count() is None
    first = all_rows(source)
    second = all_rows(source)
    assert first == second and len(first) == 10
    assert pulled == list(range(10))  # the generator ran once
    assert source.count() == 10


def test_spool_supports_interleaved_passes() -> None:
    source = open_input(iter([{"prompt": str(i)} for i in range(6)]))
    a, b = source.rows(), source.rows()
    seen = [next(a).index, next(a).index, next(b).index, next(a).index, next(b).index]
    assert seen == [0, 1, 0, 2, 1]
    assert [r.index for r in a] == [3, 4, 5]
    assert [r.index for r in b] == [2, 3, 4, 5]


def test_reiterable_iterable_is_read_afresh_each_pass() -> None:
    class Prompts:
        passes = 0

        def __iter__(self) -> Iterator[str]:
            Prompts.passes += 1
            return iter(["a", "b"])

    source = open_input(Prompts())
    assert [r.data for r in source.rows()] == [{"prompt": "a"}, {"prompt": "b"}]
    assert len(all_rows(source)) == 2
    assert Prompts.passes >= 3  # the check in open_input, then once per pass


def test_dataframe_rows_have_python_values_and_string_columns() -> None:
    df = pd.DataFrame({"prompt": ["a", "b"], 7: [1, 2], "x": [0.5, 1.5]})
    source = open_input(df)
    rows = all_rows(source)
    assert source.name == "<DataFrame>" and source.count() == 2
    assert rows[1] == Row(1, 2, {"prompt": "b", "7": 2, "x": 1.5})
    assert type(rows[0].data["7"]) is int


# --- OpenAI batch lines --------------------------------------------------------------------


def test_batch_lines_are_detected_from_the_first_row(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "batch.jsonl", [json.dumps(batch_line(f"r{i}")) for i in range(3)]
    )
    source = open_input(path)
    assert source.is_batch
    assert [r.data["custom_id"] for r in source.rows()] == ["r0", "r1", "r2"]
    assert not open_input(["plain"]).is_batch


def test_batch_input_with_a_plain_line_names_it(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "batch.jsonl", [json.dumps(batch_line("r0")), '{"prompt": "plain"}']
    )
    with pytest.raises(InputError, match=r"line 2, field 'custom_id': is not an OpenAI batch"):
        all_rows(open_input(path))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"custom_id": 7}, "custom_id"),
        ({"method": "GET"}, "method"),
        ({"body": "text"}, "body"),
    ],
)
def test_bad_batch_line_names_the_field(change: dict[str, Any], field: str) -> None:
    source = open_input([batch_line("r0"), {**batch_line("r1"), **change}])
    with pytest.raises(InputError) as info:
        all_rows(source)
    assert info.value.line == 2 and info.value.field == field


def test_columns_come_from_the_first_row(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("expression,answer\n1+1,2\n", encoding="utf-8")
    assert open_input(path).columns() == ["expression", "answer"]


def test_jsonl_values_are_exactly_what_json_loads_gives(tmp_path: Path) -> None:
    # squall parses with orjson where it may: a 64-bit-overflowing id must stay an exact int,
    # NaN must still load, a lone surrogate escape must still load (all as json.loads has it).
    lines = [
        '{"prompt": "a", "id": 123456789012345678901234567890}',
        '{"prompt": "b", "score": NaN}',
        '{"prompt": "c", "s": "\\ud83d"}',
        '{"prompt": "计算", "n": 9223372036854775807}',
    ]
    rows = all_rows(open_input(write_lines(tmp_path / "in.jsonl", lines)))
    for row, line in zip(rows, lines, strict=True):
        assert repr(row.data) == repr(json.loads(line))
    assert type(rows[0].data["id"]) is int


# --- streams (standard input, pipes) --------------------------------------------------------


def test_stdin_is_read_once_with_the_first_row_peeked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_lines(tmp_path / "in.jsonl", [json.dumps(batch_line(f"r{i}")) for i in range(3)])
    with path.open(encoding="utf-8") as stdin:  # a real file object stands in for stdin
        monkeypatch.setattr(sys, "stdin", stdin)
        source = open_input("-")
        assert source.name == "<stdin>" and source.path is None and source.count() is None
        assert source.first_row().data["custom_id"] == "r0"
        assert source.columns() == ["custom_id", "method", "url", "body"]
        assert source.is_batch
        rows = all_rows(source)
        assert [r.data["custom_id"] for r in rows] == ["r0", "r1", "r2"]
        assert [(r.index, r.line) for r in rows] == [(0, 1), (1, 2), (2, 3)]
        with pytest.raises(InputError, match="can be read only once"):
            source.rows()


def test_a_pipe_streams_its_first_row_before_the_rest_is_written() -> None:
    import os

    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:
        writer.write(b'{"prompt": "a"}\n')
        writer.flush()
        source = open_input(reader)
        assert source.name == "<stream>"
        assert source.first_row().data == {"prompt": "a"}  # the writer has not finished
        writer.write(b'\n{"prompt": "b"}\n')
        writer.close()
        assert [(r.line, r.data["prompt"]) for r in source.rows()] == [(1, "a"), (3, "b")]


def test_stdin_from_a_real_subprocess_pipe(tmp_path: Path) -> None:
    import subprocess

    code = (
        "from squall.inputs import open_input\n"
        "s = open_input('-')\n"
        "print(s.columns())\n"
        "print([r.data['prompt'] for r in s.rows()])\n"
        "try:\n"
        "    s.rows()\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    lines = "".join(json.dumps({"prompt": f"p{i}", "n": i}) + "\n" for i in range(4))
    res = subprocess.run(
        [sys.executable, "-c", code],
        input=lines.encode(),
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().splitlines() == [
        "['prompt', 'n']",
        "['p0', 'p1', 'p2', 'p3']",
        "InputError",
    ]


def test_a_stream_read_without_peeking_still_knows_its_first_row() -> None:
    import io

    source = open_input(io.BytesIO(b'{"prompt": "a"}\n{"prompt": "b"}\n'), name="feed")
    rows = source.rows()
    assert next(rows).data == {"prompt": "a"}
    assert source.first_row().data == {"prompt": "a"}
    assert [r.data["prompt"] for r in rows] == ["b"]


def test_an_empty_or_bad_stream_says_so() -> None:
    import io

    with pytest.raises(InputError, match="has no rows"):
        open_input(io.BytesIO(b"\n\n")).first_row()
    with pytest.raises(InputError, match="has no rows"):
        all_rows(open_input(io.BytesIO(b"")))
    with pytest.raises(InputError, match="is a JSON array"):
        open_input(io.BytesIO(b'[{"prompt": "a"}]\n')).first_row()
    with pytest.raises(InputError, match="line 2") as info:
        all_rows(open_input(io.BytesIO(b'{"prompt": "a"}\n{oops\n')))
    assert info.value.line == 2
    with pytest.raises(InputError, match="read as JSON Lines, not 'csv'"):
        open_input(io.BytesIO(b"a,b\n"), fmt="csv")
    assert open_input(io.BytesIO(b'{"prompt": "a"}\n'), fmt="ndjson").first_row().line == 1
