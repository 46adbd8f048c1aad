# For mypy only (see [tool.mypy] in pyproject.toml): tests/journal's files import
# tests/journal/journal_support.py by its bare name, as pytest puts tests/journal on sys.path.
from tests.journal.journal_support import *  # noqa: F403
