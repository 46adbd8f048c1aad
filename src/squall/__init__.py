"""squall: batches of prompts through OpenAI-compatible endpoints, losing no paid work.

Fast, within every rate limit, and resumable.

Importing squall does no I/O, starts no threads and sets no global state.
"""

from .api import RunResult, arun, run
from .config import EndpointConfig, KeyConfig, Price, RetryConfig, RunConfig
from .config import load as load_config
from .errors import (
    ConfigError,
    InputChangedError,
    InputError,
    JournalError,
    MissingExtraError,
    OutputError,
    RunStopped,
    ServeError,
    SquallError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "EndpointConfig",
    "InputChangedError",
    "InputError",
    "JournalError",
    "KeyConfig",
    "MissingExtraError",
    "OutputError",
    "Price",
    "RetryConfig",
    "RunConfig",
    "RunResult",
    "RunStopped",
    "ServeError",
    "SquallError",
    "__version__",
    "arun",
    "load_config",
    "run",
]
