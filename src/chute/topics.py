"""Topic names and subscription patterns (AMQP topic semantics), and each group's queue name.

A topic is dot-separated words (`order.created`); a pattern may use `*` for exactly one word and
`#` for zero or more (`order.*`, `audit.#`). Words are letters, digits, `_` and `-`.
"""

from __future__ import annotations

import functools
import re

from .errors import ConfigurationError

_WORD = re.compile(r"[A-Za-z0-9_-]+\Z")
GROUP_PREFIX = "chute.group."


def check_topic(topic: str) -> str:
    """Return the topic if it is valid for publishing; raise ValueError saying what is wrong."""
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"topic {topic!r} must be a non-empty string of dot-separated words")
    for i, word in enumerate(topic.split(".")):
        if not _WORD.match(word):
            raise ValueError(f"topic {topic!r}: word {i + 1} ({word!r}) must be letters, digits, '_' or '-' "
                             "(wildcards are for subscriptions, not for publishing)")
    return topic


def check_pattern(pattern: str) -> str:
    """Return the pattern if valid; raise ConfigurationError naming the bad word."""
    if not isinstance(pattern, str) or not pattern:
        raise ConfigurationError(f"subscription pattern {pattern!r} must be a non-empty string")
    for i, word in enumerate(pattern.split(".")):
        if word not in ("*", "#") and not _WORD.match(word):
            raise ConfigurationError(
                f"subscription pattern {pattern!r}: word {i + 1} ({word!r}) must be '*' (one word), '#' (any "
                "number of words) or letters, digits, '_' and '-'")
    return pattern


def check_group(group: str) -> str:
    if not isinstance(group, str) or not _WORD.match(group):
        raise ConfigurationError(f"subscriber group {group!r} must be letters, digits, '_' or '-'")
    return group


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    for word in pattern.split("."):
        if word == "*":
            parts.append(r"[^.]+")
        elif word == "#":
            parts.append(r"#")
        else:
            parts.append(re.escape(word))
    regex = r"\.".join(parts)
    # '#' matches zero or more words, with the dots around it optional accordingly
    regex = regex.replace(r"\.#\.", r"(?:\..+)?\.").replace(r"#\.", r"(?:.+\.)?").replace(r"\.#", r"(?:\..+)?")
    regex = regex.replace("#", ".*")
    return re.compile(regex + r"\Z")


def matches(pattern: str, topic: str) -> bool:
    return _compile(pattern).match(topic) is not None


def group_queue(group: str) -> str:
    """The queue a subscriber group's events wait in."""
    return GROUP_PREFIX + group
