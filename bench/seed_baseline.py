"""The seed's method, re-implemented faithfully: the baseline squall is measured against.

This is the `AsyncLLMAPI` class of the seed post (/work/shared/seed/async-llm-api-batch-calling
.zh.md), changed only where it must be to run here:

- `openai.AsyncOpenAI` stands in for langchain's `ChatOpenAI` (langchain is not installed in
  this environment). `ChatOpenAI.agenerate` drives the same `openai` client underneath, with the
  same default of 2 retries, so this is the seed's HTTP behaviour minus langchain's own CPU cost:
  if anything, it flatters the seed.
- tqdm is not installed either: `_Bar` stands in for `tqdm(total=...)` and counts silently.
- The answer is read as `choices[0].message.content` where the seed reads
  `generations[0][0].text` (the same text through langchain's wrapper).

Everything else is the seed's: one `AsyncLimiter(num_per_second, 1)` per key, round-robin
`llms[i % len(llms)]`, `asyncio.gather` over chunks of `chunk_size` rows with one CSV per chunk
(a chunk whose CSV exists is skipped on a rerun), `loop.run_until_complete` on
`asyncio.get_event_loop()`, and a final `all_{keyword}.csv`. Like the seed, it has no retry of
its own and no error handling: the first exception in a chunk ends the whole run.

Run it as the seed's `__main__` did, on a JSONL file of `{"prompt": ...}` rows:
`python bench/seed_baseline.py < job.json` where the job is
`{"base_url": ..., "keys": [{"key": ..., "rps": 40}], "input": "rows.jsonl",
"output": "out/seed", "keyword": "bench", "chunk_size": 500, "model": "sim-model"}`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from aiolimiter import AsyncLimiter
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion


class _Bar:
    """Stands in for `tqdm(total=...)`: the seed's progress bar, minus the drawing."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@dataclass
class AsyncLLMAPI:
    """大模型API的调用类 (the seed's class: one key, its limiter, and its client)."""

    base_url: str
    api_key: str = field(repr=False)  # 每个API的key不一样
    uid: int = 0
    cnt: int = 0  # 统计每个API被调用了多少次
    model: str = "gpt-3.5-turbo"
    llm: AsyncOpenAI = field(init=False, repr=False)  # 自动创建的对象，不需要用户传入
    num_per_second: float = 6  # 限速每秒调用6次

    def __post_init__(self) -> None:
        self.llm = self.create_llm()
        self.limiter = AsyncLimiter(self.num_per_second, 1)

    def create_llm(self) -> AsyncOpenAI:
        """Return the client (the seed builds a ChatOpenAI with the same three settings)."""
        return AsyncOpenAI(base_url=self.base_url, api_key=self.api_key)

    async def __call__(self, text: str) -> ChatCompletion:
        # 异步协程 限速
        self.cnt += 1
        async with self.limiter:
            return await self.llm.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": text}]
            )

    @staticmethod
    async def _run_task_with_progress(
        task: Awaitable[ChatCompletion], pbar: _Bar
    ) -> ChatCompletion:
        """包装任务以更新进度条"""
        result = await task
        pbar.update(1)
        return result

    @staticmethod
    def async_run(
        llms: list[AsyncLLMAPI],
        data: list[str],
        keyword: str = "",  # 文件导出名
        output_dir: str = "output",
        chunk_size: int = 500,
    ) -> pd.DataFrame:
        """Run `data` in chunks; return every answer as one DataFrame (column `infer`)."""

        async def _func(llms: list[AsyncLLMAPI], data: list[str]) -> list[ChatCompletion]:
            """异步请求处理一小块数据"""
            calls = [llms[i % len(llms)](text) for i, text in enumerate(data)]
            with _Bar(total=len(calls)) as pbar:
                results = await asyncio.gather(
                    *[AsyncLLMAPI._run_task_with_progress(task, pbar) for task in calls]
                )
            return list(results)

        idx = 0
        all_df = []
        while idx < len(data):
            file = f"{idx}_{keyword}.csv"
            file_dir = os.path.join(output_dir, file)

            if os.path.exists(file_dir):
                print(f"{file_dir} already exist! Just skip.", file=sys.stderr)
                tmp_df = pd.read_csv(file_dir)
            else:
                tmp_data = data[idx : idx + chunk_size]

                loop = asyncio.get_event_loop()
                tmp_result = loop.run_until_complete(_func(llms=llms, data=tmp_data))
                texts = [item.choices[0].message.content for item in tmp_result]
                tmp_df = pd.DataFrame({"infer": texts})

                # 如果文件夹不存在，则创建
                if not os.path.exists(tmp_folder := os.path.dirname(file_dir)):
                    os.makedirs(tmp_folder)

                tmp_df.to_csv(file_dir, index=False)

            all_df.append(tmp_df)
            idx += chunk_size

        out = pd.concat(all_df)
        out.to_csv(os.path.join(output_dir, f"all_{keyword}.csv"), index=False)
        return out


def load_texts(path: str) -> list[str]:
    """Return the prompts of a JSONL file as the list the seed takes (all in memory, as it is)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["prompt"] for line in f if line.strip()]


def run_job(job: dict[str, Any]) -> int:
    """Run the seed's method on `job`; return the number of answers it saved."""
    llms = [
        AsyncLLMAPI(
            base_url=job["base_url"],
            api_key=k["key"],
            uid=i,
            model=job.get("model", "sim-model"),
            num_per_second=k["rps"] if k.get("rps") is not None else 1e9,
        )
        for i, k in enumerate(job["keys"])
    ]
    texts = load_texts(job["input"])
    df = AsyncLLMAPI.async_run(
        llms,
        texts,
        keyword=job.get("keyword", "bench"),
        output_dir=job["output"],
        chunk_size=int(job.get("chunk_size", 500)),
    )
    return len(df)


if __name__ == "__main__":
    print(run_job(json.load(sys.stdin)))
