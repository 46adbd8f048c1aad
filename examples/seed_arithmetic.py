"""The seed blog post's arithmetic batch, ported to squall.

The seed (`AsyncLLMAPI.async_run`) sends 1000 expressions made by
`generate_arithmetic_expression` round-robin over its keys, in chunks of 500 with a CSV per
chunk. Here the same 1000 expressions go through squall: each request goes to the key that can
start soonest, every answer is journaled the moment it arrives, and a rerun resumes.

    python examples/seed_arithmetic.py --config squall.toml        # your endpoints and keys
    python examples/seed_arithmetic.py --simulate                  # a local SIMULATED provider
"""

from __future__ import annotations

import argparse
import random
import sys

import squall


def generate_arithmetic_expression(num: int) -> tuple[str, int]:
    """The seed's generator, unchanged: `num` operators, operands 1..100, `*` shown as `x`."""
    operators = ["+", "-", "*"]
    expression = f"{random.randint(1, 100)} {random.choice(operators)} {random.randint(1, 100)}"
    num -= 1
    for _ in range(num):
        expression = f"{expression} {random.choice(operators)} {random.randint(1, 100)}"
    result = eval(expression)  # the seed's own expression, made above: never user input
    expression = expression.replace("*", "x")
    return expression, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="squall.toml")
    parser.add_argument("--simulate", action="store_true", help="use the local simulator")
    parser.add_argument("-n", type=int, default=1000)
    args = parser.parse_args()

    random.seed(0)  # the same 1000 expressions on every run, so a rerun resumes
    rows = []
    for _ in range(args.n):
        text, label = generate_arithmetic_expression(2)
        rows.append({"expression": text, "label": label})

    if args.simulate:
        from squall.simulator import Simulator, demo_config

        sim = Simulator(demo_config())
        url = sim.start()
        config = squall.RunConfig(
            model="demo-model",
            endpoints=(
                squall.EndpointConfig(
                    name="sim",
                    base_url=url,
                    keys=tuple(squall.KeyConfig(key=k.key, rpm=k.rpm) for k in sim.config.keys),
                ),
            ),
        )
    res = squall.run(
        rows,
        output="output/all_数学计算.csv",
        config=config if args.simulate else args.config,
        template="{expression}",
    )
    print(res.summary)
    if args.simulate:
        sim.stop()
    right = sum(str(r["label"]) == (r["response"] or "").strip() for r in res.rows())
    print(f"exact answers: {right}/{len(rows)}")
    sys.exit(res.exit_code)


if __name__ == "__main__":
    main()
