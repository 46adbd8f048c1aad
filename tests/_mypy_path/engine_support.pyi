# For mypy only (see [tool.mypy] in pyproject.toml): tests/engines's files import
# tests/engines/engine_support.py by its bare name, as pytest puts tests/engines on sys.path.
from tests.engines.engine_support import *  # noqa: F403
