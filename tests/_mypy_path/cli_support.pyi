# For mypy only (see [tool.mypy] in pyproject.toml): tests/cli's files import
# tests/cli/cli_support.py by its bare name, as pytest puts tests/cli on sys.path.
from tests.cli.cli_support import *  # noqa: F403
