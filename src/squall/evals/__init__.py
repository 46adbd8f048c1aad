"""Evals: the seed's arithmetic set and users' own sets, scored per model, with a report."""

from .arithmetic import (
    DEFAULT_TEMPLATE,
    OPERATORS,
    SEED_OPERANDS,
    ArithmeticItem,
    evaluate_expression,
    generate_items,
)
from .report import ArithmeticReport, FileReport
from .runner import (
    EvalResult,
    ModelRun,
    aevaluate_arithmetic,
    aevaluate_file,
    evaluate_arithmetic,
    evaluate_file,
)
from .scorers import SCORER_NAMES, Score, make_scorer, score_arithmetic

__all__ = [
    "DEFAULT_TEMPLATE",
    "OPERATORS",
    "SCORER_NAMES",
    "SEED_OPERANDS",
    "ArithmeticItem",
    "ArithmeticReport",
    "EvalResult",
    "FileReport",
    "ModelRun",
    "Score",
    "aevaluate_arithmetic",
    "aevaluate_file",
    "evaluate_arithmetic",
    "evaluate_expression",
    "evaluate_file",
    "generate_items",
    "make_scorer",
    "score_arithmetic",
]
