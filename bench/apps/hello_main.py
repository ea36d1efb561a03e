"""Baseline: the functions-framework hello world."""

from typing import Any

import functions_framework


@functions_framework.http
def hello(request: Any) -> str:
    return "ok"
