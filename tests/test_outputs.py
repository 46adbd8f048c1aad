"""Writing output rows: JSONL, CSV, Parquet and OpenAI Batch API output lines."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from squall.errors import MissingExtraError, OutputError
from squall.inputs import open_input
from squall.outputs import merge_fields, open_writer
from squall.prompts import RequestBuilder
from squall.records import OUTPUT_FIELDS, ErrorInfo, Row, RowResult, RowState


def done(index: int, text: str = "答案", raw: str | None = None) -> RowResult:
    return RowResult(
        index=index,
        state=RowState.DONE,
        response=text,
        finish_reason="stop",
        prompt_tokens=10,
        completion_tokens=3,
        latency_s=0.123456,
        attempts=1,
        endpoint="local",
        raw=raw,
    )


def failed(index: int, status: int | None = 400) -> RowResult:
    return RowResult(
        index=index,
        state=RowState.FAILED,
        error=ErrorInfo(type="bad_request", status=status, message="context too long"),
        attempts=1,
        endpoint="local",
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- JSONL ---------------------------------------------------------------------------------


def test_jsonl_rows_have_input_fields_then_output_fields(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with open_writer(out, batch=False) as w:
        w.write(Row(0, 2, {"expression": "1+1", "n": 1}), done(0))
        w.write(Row(1, 3, {"expression": "x", "n": 2}), failed(1))
        w.write(Row(2, 4, {"expression": "y", "n": 3}), None)
    rows = read_jsonl(out)
    assert list(rows[0]) == ["expression", "n", *OUTPUT_FIELDS]
    assert rows[0]["response"] == "答案" and rows[0]["n"] == 1 and rows[0]["latency_s"] == 0.1235
    assert rows[1]["error"] == {"type": "bad_request", "status": 400, "message": "context too long"}
    assert rows[1]["response"] is None
    assert rows[2] == {"expression": "y", "n": 3, **dict.fromkeys(OUTPUT_FIELDS), "attempts": 0}
    assert "答案" in out.read_text(encoding="utf-8")  # not \\u-escaped


def test_input_field_named_like_an_output_field_is_kept_as_input_name() -> None:
    merged = merge_fields({"response": "gold", "input_response": "x", "q": 1}, done(0))
    assert merged["input_input_response"] == "gold"
    assert merged["input_response"] == "x"
    assert merged["response"] == "答案"


def test_nan_is_written_as_null(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with open_writer(out, batch=False) as w:
        w.write(Row(0, 1, {"x": math.nan}), None)
    assert read_jsonl(out)[0]["x"] is None


def test_writer_writes_a_partial_file_and_renames_on_close(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    w = open_writer(out, batch=False)
    w.write(Row(0, 1, {"prompt": "a"}), done(0))
    assert w.partial_path == tmp_path / "out.jsonl.partial"
    assert w.partial_path.exists() and not out.exists()
    w.close()
    assert out.exists() and not w.partial_path.exists()
    assert w.rows_written == 1
    w.close()  # a second close does nothing


def test_abort_removes_the_partial_and_keeps_the_old_output(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("old\n", encoding="utf-8")
    w = open_writer(out, batch=False)
    w.write(Row(0, 1, {"prompt": "a"}), done(0))
    w.abort()
    assert out.read_text(encoding="utf-8") == "old\n"
    assert not w.partial_path.exists()


def test_an_exception_in_the_with_block_aborts(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    with pytest.raises(RuntimeError), open_writer(out, batch=False) as w:
        w.write(Row(0, 1, {"prompt": "a"}), done(0))
        raise RuntimeError("crash")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_output_directory_is_created(tmp_path: Path) -> None:
    out = tmp_path / "results" / "run1" / "out.jsonl"
    with open_writer(out, batch=False) as w:
        w.write(Row(0, 1, {"prompt": "a"}), None)
    assert out.exists()


def test_unwritable_path_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(OutputError, match=r"cannot create the output's directory.*choose another"):
        open_writer(blocker / "out.jsonl", batch=False)


def test_output_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "out.jsonl").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        open_writer(tmp_path / "out.jsonl", batch=False)


def test_unknown_output_format(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"name it \.jsonl, \.csv, \.tsv or \.parquet"):
        open_writer(tmp_path / "out.xlsx", batch=False)
    with pytest.raises(OutputError, match="unknown output format 'xml'"):
        open_writer(tmp_path / "out.jsonl", batch=False, fmt="xml")
    w = open_writer(tmp_path / "out.txt", batch=False, fmt="csv")
    w.close()
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").startswith("response,error,")


# --- CSV -----------------------------------------------------------------------------------


def test_csv_round_trip_from_a_csv_input(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text('expression,answer\n1 + 1,2\n"a,b\nc",3\n', encoding="utf-8")
    out = tmp_path / "out.csv"
    source = open_input(src)
    with open_writer(out, batch=False) as w:
        for r in source.rows():
            w.write(r, done(r.index) if r.index == 0 else failed(r.index))
    with out.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["expression", "answer", *OUTPUT_FIELDS]
    assert rows[0]["response"] == "答案" and rows[0]["error"] == ""
    assert rows[0]["prompt_tokens"] == "10"
    assert rows[1]["expression"] == "a,b\nc"
    assert json.loads(rows[1]["error"])["message"] == "context too long"
    assert rows[1]["response"] == ""


def test_csv_later_rows_with_new_columns_keep_every_value(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    with open_writer(out, batch=False) as w:
        w.write(Row(0, 1, {"a": "1"}), done(0, text="长" * 200_000))
        w.write(Row(1, 2, {"a": "2", "b": {"k": 1}}), done(1))
        w.write(Row(2, 3, {"c": "3"}), None)
    with out.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["a", *OUTPUT_FIELDS, "b", "c"]
    assert [(r["a"], r["b"], r["c"]) for r in rows] == [
        ("1", "", ""),
        ("2", '{"k": 1}', ""),
        ("", "", "3"),
    ]
    assert rows[0]["response"] == "长" * 200_000
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_csv_rows_with_the_same_columns_in_another_order(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    with open_writer(out, batch=False) as w:
        w.write(Row(0, 1, {"a": "1", "b": "2"}), None)
        w.write(Row(1, 2, {"b": "4", "a": "3"}), None)
    with out.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["a"], r["b"]) for r in rows] == [("1", "2"), ("3", "4")]


def test_tsv_output_uses_tabs(tmp_path: Path) -> None:
    out = tmp_path / "out.tsv"
    with open_writer(out, batch=False) as w:
        w.write(Row(0, 1, {"q": "a,b"}), done(0))
    header, first = out.read_text(encoding="utf-8").splitlines()
    assert header.split("\t")[:2] == ["q", "response"]
    assert first.split("\t")[:2] == ["a,b", "答案"]


# --- Parquet -------------------------------------------------------------------------------


def test_parquet_round_trip_keeps_types_over_many_batches(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    n = 10_000
    with open_writer(out, batch=False) as w:
        for i in range(n):
            data = {"prompt": f"计算 {i}", "n": i, "x": i / 2, "meta": {"k": i}}
            w.write(Row(i, i + 1, data), done(i) if i % 2 else failed(i))
    table = pq.read_table(out)
    assert table.num_rows == n
    schema = table.schema
    assert schema.field("n").type == pa.int64() and schema.field("x").type == pa.float64()
    assert schema.field("meta").type == pa.string()
    assert schema.field("prompt_tokens").type == pa.int64()
    assert schema.field("latency_s").type == pa.float64()
    assert schema.field("error").type == pa.string()
    rows = table.to_pylist()
    assert rows[1]["response"] == "答案" and rows[1]["prompt_tokens"] == 10
    assert json.loads(rows[0]["error"])["status"] == 400 and rows[0]["prompt_tokens"] is None
    assert json.loads(rows[9999]["meta"]) == {"k": 9999}
    assert pq.ParquetFile(out).metadata.num_row_groups == 3  # 4096-row batches


def test_parquet_column_that_changes_type_later_is_stored_as_text(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    with open_writer(out, batch=False) as w:
        for i in range(5000):
            value: Any = i if i < 4500 else f"v{i}"
            big = 2**70 if i == 4999 else 1
            w.write(Row(i, i + 1, {"v": value, "big": big, "num": 2**60 + 1 if i else 0.5}), None)
        w.write(Row(5000, 5001, {"v": None, "late": True}), None)
    table = pq.read_table(out)
    assert table.schema.field("v").type == pa.string()
    assert table.schema.field("big").type == pa.string()
    assert table.schema.field("late").type == pa.bool_()
    assert table.schema.field("num").type == pa.float64()
    rows = table.to_pylist()
    assert rows[0]["v"] == "0" and rows[4999]["v"] == "v4999" and rows[5000]["v"] is None
    assert rows[4999]["big"] == str(2**70)
    assert rows[0]["late"] is None and rows[5000]["late"] is True


def test_parquet_from_a_dataframe_keeps_timestamps(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"prompt": ["a", "b"], "at": pd.to_datetime(["2024-01-01", "2024-06-01"])})
    out = tmp_path / "out.parquet"
    with open_writer(out, batch=False) as w:
        for r in open_input(df).rows():
            w.write(r, done(r.index))
    back = pd.read_parquet(out)
    assert list(back["at"]) == list(df["at"])
    assert list(back["response"]) == ["答案", "答案"]


def test_parquet_with_no_rows_has_the_output_columns(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    open_writer(out, batch=False).close()
    table = pq.read_table(out)
    assert table.num_rows == 0 and table.column_names == list(OUTPUT_FIELDS)


def test_parquet_without_pyarrow_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingExtraError, match=r'pip install "squall\[parquet\]"'):
        open_writer(tmp_path / "out.parquet", batch=False)


# --- OpenAI Batch API output ---------------------------------------------------------------


def batch_row(index: int) -> Row:
    data = {
        "custom_id": f"task-{index}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": f"q{index}"}]},
    }
    return Row(index, index + 1, data)


RAW = json.dumps(
    {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "A"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
)


def test_batch_output_lines_match_openais_shape(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with open_writer(out, batch=True) as w:
        w.write(batch_row(0), done(0, raw=RAW))
        w.write(batch_row(1), done(1, text="B"))
        w.write(batch_row(2), failed(2))
        w.write(batch_row(3), failed(3, status=None))
        w.write(batch_row(4), None)
    lines = read_jsonl(out)
    assert [line["custom_id"] for line in lines] == [f"task-{i}" for i in range(5)]
    assert all(set(line) == {"id", "custom_id", "response", "error"} for line in lines)
    assert all(line["id"].startswith("batch_req_") for line in lines)
    assert len({line["id"] for line in lines}) == 5

    first = lines[0]
    assert first["error"] is None
    assert first["response"]["status_code"] == 200
    assert first["response"]["request_id"] == "chatcmpl-abc"
    assert first["response"]["body"] == json.loads(RAW)

    rebuilt = lines[1]["response"]["body"]
    assert rebuilt["choices"][0]["message"]["content"] == "B"
    assert rebuilt["usage"] == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}

    assert lines[2]["response"]["status_code"] == 400
    assert lines[2]["response"]["body"]["error"]["message"] == "context too long"
    assert lines[2]["error"] == {"code": "bad_request", "message": "context too long"}
    assert lines[3]["response"] is None and lines[3]["error"]["code"] == "bad_request"
    assert lines[4]["response"] is None and lines[4]["error"]["code"] == "not_completed"


def test_batch_ids_are_stable_across_rewrites(tmp_path: Path) -> None:
    ids = []
    for name in ("a.jsonl", "b.jsonl"):
        with open_writer(tmp_path / name, batch=True) as w:
            w.write(batch_row(0), done(0))
        ids.append(read_jsonl(tmp_path / name)[0]["id"])
    assert ids[0] == ids[1]


@pytest.mark.parametrize("name", ["out.csv", "out.parquet", "out.tsv"])
def test_batch_output_must_be_jsonl(tmp_path: Path, name: str) -> None:
    with pytest.raises(OutputError, match=r"only JSONL holds: name the output \.jsonl"):
        open_writer(tmp_path / name, batch=True)


def test_batch_round_trip_from_input_file_to_output_file(tmp_path: Path) -> None:
    src = tmp_path / "batch.jsonl"
    src.write_text(
        "\n".join(json.dumps(batch_row(i).data, ensure_ascii=False) for i in range(4)) + "\n",
        encoding="utf-8",
    )
    source = open_input(src)
    builder = RequestBuilder(
        template=None,
        system=None,
        max_tokens=None,
        temperature=None,
        params={},
        source_name=source.name,
    )
    out = tmp_path / "out.jsonl"
    with open_writer(out, batch=source.is_batch) as w:
        for r in source.rows():
            spec = builder.build(r, batch=True)
            w.write(r, done(spec.index, text=f"answer to {spec.custom_id}"))
    lines = read_jsonl(out)
    assert [line["custom_id"] for line in lines] == [f"task-{i}" for i in range(4)]
    assert lines[3]["response"]["body"]["choices"][0]["message"]["content"] == "answer to task-3"


def test_jsonl_output_keeps_long_integers_and_odd_text(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    rows = [
        Row(0, 1, {"id": 123456789012345678901234567890, "prompt": "a"}),
        Row(1, 2, {"id": 2, "prompt": "lone \ud800 surrogate"}),
    ]
    with open_writer(path, batch=False) as w:
        for row in rows:
            w.write(row, done(row.index))
    back = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert back[0]["id"] == 123456789012345678901234567890
    assert back[1]["prompt"] == "lone \ud800 surrogate"
    assert [b["response"] for b in back] == ["答案", "答案"]


def test_parquet_embedding_column_is_a_list_of_float32(tmp_path: Path) -> None:
    from squall.operations import EMBEDDINGS

    out = tmp_path / "vectors.parquet"
    vector = [0.1, -2.5, 3.0]
    with open_writer(out, batch=False, operation=EMBEDDINGS) as w:
        ok = RowResult(index=0, state=RowState.DONE, response=json.dumps(vector))
        bad = RowResult(index=1, state=RowState.FAILED, error=ErrorInfo("bad_request", 400, "no"))
        w.write(Row(0, 2, {"text": "a"}), ok)
        w.write(Row(1, 3, {"text": "b"}), bad)
    table = pq.read_table(out)
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    rows = table.to_pylist()
    expected = [struct_float32(v) for v in vector]
    assert rows[0]["embedding"] == expected
    assert rows[1]["embedding"] is None


def struct_float32(value: float) -> float:
    import struct

    return float(struct.unpack("f", struct.pack("f", value))[0])
