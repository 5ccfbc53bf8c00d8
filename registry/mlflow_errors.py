"""MLflow errors by their `error_code` (MlflowException / RestException carry it, the same on a sqlite store and
through `mlflow server`), never by message text, which MLflow is free to reword."""

from __future__ import annotations

ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"


def error_code(e: BaseException) -> str:
    """The MLflow error code of `e` ("" for an exception that is not MLflow's)."""
    return str(getattr(e, "error_code", "") or "")


def already_exists(e: BaseException) -> bool:
    return error_code(e) == ALREADY_EXISTS


def missing(e: BaseException) -> bool:
    return error_code(e) == DOES_NOT_EXIST
