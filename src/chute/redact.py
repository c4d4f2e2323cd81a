"""Secret redaction: what the dashboard, the JSON API, the CLI and logs show instead of a secret.

A value is secret when the name it goes by matches one of a set of glob patterns (case-insensitive):
a keyword argument, a parameter a positional argument binds to, a key of a dict anywhere inside
an argument or result, or a `name=value` / `"name": "value"` pair inside free text (error
messages, tracebacks, dead-letter reasons). Passwords in URLs are masked too. Redaction is for
display: the message itself is never changed.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

MASK = "***"
DEFAULT_PATTERNS = ("*password*", "*passwd*", "*pwd*", "*secret*", "*token*", "*key", "*_key_*", "*apikey*",
                    "*authorization*", "*auth", "auth_*", "*_auth_*", "*credential*", "*cookie*", "*session*",
                    "*signature*", "*private*")
ENV = "CHUTE_REDACT"  # comma-separated extra patterns, added to the defaults

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
# `name=value`, `name: value`, `"name": "value"`; the value is only looked at (a lookahead), so a pair
# inside another pair's value (`error: password=x`) is still found.
_PAIR = re.compile(r"""(?P<q>["']?)(?P<name>[A-Za-z_][\w.-]*)(?P=q)(?P<sep>\s*[=:]\s*)"""
                   r"""(?=(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|(?:(?:bearer|basic|token)\s+)?[^\s,;&)\]}]+))""",
                   re.IGNORECASE)


class Redactor:
    """Masks values whose names match `patterns` (globs like `*password*`, case-insensitive)."""

    def __init__(self, patterns: Iterable[str] = DEFAULT_PATTERNS) -> None:
        self.patterns = tuple(p.strip().lower() for p in patterns if p.strip())
        self._regex = re.compile("|".join(fnmatch.translate(p) for p in self.patterns) or r"(?!)")

    @classmethod
    def from_env(cls, extra: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> Redactor:
        """The default patterns, plus `extra`, plus those in $CHUTE_REDACT (comma-separated)."""
        env = (environ if environ is not None else os.environ).get(ENV, "")
        return cls((*DEFAULT_PATTERNS, *extra, *env.split(",")))

    def secret(self, name: str) -> bool:
        """True if a value going by `name` must not be shown."""
        return _matches(self._regex, name.lower())

    def value(self, obj: Any) -> Any:
        """A copy of `obj` with secret dict entries masked and free text cleaned, at any depth."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            return {k: MASK if isinstance(k, str) and self.secret(k) else self.value(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.value(v) for v in obj]
        return obj

    def call(self, fn: Callable[..., Any] | None, args: Iterable[Any], kwargs: Mapping[str, Any]
             ) -> tuple[list[Any], dict[str, Any]]:
        """Arguments of a call to `fn` with secrets masked; positional ones by the parameter they bind to."""
        names = _parameter_names(fn) if fn is not None else ()
        shown = [MASK if i < len(names) and self.secret(names[i]) else self.value(a) for i, a in enumerate(args)]
        return shown, {k: MASK if self.secret(k) else self.value(v) for k, v in kwargs.items()}

    def text(self, text: str) -> str:
        """Free text with URL passwords and secret `name=value` pairs masked."""
        if not text:
            return text
        text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
        out: list[str] = []
        done = 0
        for m in _PAIR.finditer(text):
            if m.start() < done or not self.secret(m["name"]):
                continue
            value = m["value"]
            quote = value[0] if value[:1] in ("'", '"') else ""
            out += [text[done:m.end()], quote, MASK, quote]
            done = m.end() + len(value)
        return "".join(out) + text[done:] if out else text


@functools.lru_cache(maxsize=4096)
def _matches(regex: re.Pattern[str], name: str) -> bool:
    return regex.match(name) is not None


def _parameter_names(fn: Callable[..., Any]) -> tuple[str, ...]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
