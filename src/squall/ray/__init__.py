"""squall on Ray: one run spread over a cluster, with every key's limits held cluster-wide.

`pip install "squall[ray]"`, then `squall run ... --ray local|auto|ADDRESS [--workers N]`,
or `squall.ray.process(ds, config=...)` for a Ray Dataset. Only this package imports Ray
(`cluster` does), and only the runner imports this package, when `--ray` is given.

One job per module: `budget` (every key's slots, pure arithmetic), `remote_pool` (the
engine's pool port in a worker, leasing slices of slots), `actors` (the coordinator and the
worker, plain classes), `cluster` (connecting, starting the actors), `driver` (rows out,
events into the journal), `session` (the wiring of a run), `process` (Ray Data).
"""

from .process import process

__all__ = ["process"]
