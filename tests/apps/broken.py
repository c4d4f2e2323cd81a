"""A module that fails to import, for the worker error test."""

raise ZeroDivisionError("division by zero")
