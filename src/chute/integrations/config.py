"""An App configured from a web framework's settings, with tasks declared before they are read.

Frameworks read their settings when the web app is created (Flask's app.config, Pyramid's .ini,
Bottle's config), after the modules that declare tasks were imported. `DeferredApp` takes task
declarations at import time and opens its broker when `configure()` is given the settings.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, NoReturn, cast

from ..app import App
from ..errors import ConfigurationError

OPTIONS: dict[str, type] = {
    "url": str, "results": str, "codec": str, "max_message_size": int, "result_ttl": float,
    "idempotency_window": float, "lease": float, "max_deliveries": int, "default_queue": str, "eager": bool,
    "name": str, "signing_keys": dict,
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def app_options(settings: Mapping[str, Any], prefix: str, *, where: str,
                ignore: Collection[str] = ()) -> dict[str, Any]:
    """App options from the settings named `prefix + option` (any case), strings coerced (.ini files).

    An unknown `prefix*` setting is an error naming the known ones: a typo should not pass silently.
    """
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if not isinstance(key, str) or not key.lower().startswith(prefix.lower()) or key in ignore:
            continue
        name = key[len(prefix):].lower()
        kind = OPTIONS.get(name)
        if kind is None:
            known = ", ".join(prefix + (n.upper() if prefix.isupper() else n) for n in OPTIONS)
            raise ConfigurationError(f"{where}: unknown setting {key!r}; chute knows {known}")
        out[name] = _coerce(value, kind, f"{where}: {key}")
    return out


def _coerce(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, str) or kind is str:
        if kind is dict and not isinstance(value, Mapping):
            raise ConfigurationError(f"{what} must be a mapping of key id to secret, or 'id:secret, ...'")
        return value
    if kind is bool:
        if value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigurationError(f"{what}={value!r} is not a boolean (true/false)")
    if kind is dict:  # signing keys: "id:secret, id2:secret2"
        pairs = [p.strip().split(":", 1) for p in value.replace("\n", ",").split(",") if p.strip()]
        if not pairs or any(len(p) != 2 for p in pairs):
            raise ConfigurationError(f"{what}: write signing keys as 'id:secret, id2:secret2'")
        return {k.strip(): s.strip() for k, s in pairs}
    try:
        return kind(value)
    except ValueError:
        raise ConfigurationError(f"{what}={value!r} is not a number") from None


class DeferredApp(App):
    """An App whose broker and options come later: declare tasks now, `configure(...)` at start-up.

    Until then sending, reading results or running a worker raises ConfigurationError saying so.
    """

    def __init__(self, name: str = "chute", *, hint: str = "configure()") -> None:
        super().__init__("memory://", name=name)  # holds declarations only
        self._placeholder = self.broker
        self.url = "(not configured)"
        self.broker = self.results = cast(Any, _NotConfigured(name, hint))
        self.configured = False

    def configure(self, url: str | None = None, **options: Any) -> None:
        """Open the broker (`url`, else $CHUTE_URL, else the default) with App options; once."""
        if self.configured:
            raise ConfigurationError(f"{self!r} is already configured; configure an App once")
        kept = self.tasks, self.schedules, self.subscribers, self.queues, self.hooks
        App.__init__(self, url, **{"name": self.name, **options})
        self.tasks, self.schedules, self.subscribers, self.queues, self.hooks = kept
        self._placeholder.close()
        self.configured = True

    async def aclose(self) -> None:
        if self.configured:
            await super().aclose()

    def close(self) -> None:
        if self.configured:
            super().close()


class _NotConfigured:
    def __init__(self, name: str, hint: str) -> None:
        self._name, self._hint = name, hint

    def __getattr__(self, attr: str) -> NoReturn:
        raise ConfigurationError(f"chute app {self._name!r} is not configured yet: call {self._hint} before "
                                 "sending tasks, reading results or starting a worker")
