# For mypy only (see [tool.mypy] in pyproject.toml): tests/engines's files import
# tests/engines/model_cache.py by its bare name, as pytest puts tests/engines on sys.path.
from tests.engines.model_cache import *  # noqa: F403
