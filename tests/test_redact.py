"""Secret redaction: names matched by pattern, at any depth, in calls and in free text."""

from __future__ import annotations

from chute.redact import MASK, Redactor


def login(user: str, password: str, retries: int = 3) -> None: ...


def test_arguments_are_masked_by_the_parameter_they_bind_to_and_by_key_at_any_depth() -> None:
    r = Redactor()
    args, kwargs = r.call(login, ["bob", "hunter2"], {"api_key": "k1", "data": {"x": [{"Secret": 1}]}, "note": "hi"})
    assert args == ["bob", MASK]
    assert kwargs == {"api_key": MASK, "data": {"x": [{"Secret": MASK}]}, "note": "hi"}
    assert r.call(None, ["hunter2"], {})[0] == ["hunter2"]  # unknown function: a bare positional has no name


def test_free_text_loses_url_passwords_and_secret_pairs() -> None:
    r = Redactor()
    text = ('error: password=hunter2; redis://app:pw1@db:6379/0 {"api_key": "k2"} Authorization: Bearer t0k '
            "token='x y' count=3")
    clean = r.text(text)
    for secret in ("hunter2", "pw1", "k2", "t0k", "x y"):
        assert secret not in clean
    assert "redis://app:***@db:6379/0" in clean and "count=3" in clean and '"api_key": "***"' in clean


def test_patterns_are_configurable_from_the_environment() -> None:
    r = Redactor.from_env(environ={"CHUTE_REDACT": "ssn, *iban*"})
    assert r.secret("ssn") and r.secret("customer_IBAN") and r.secret("password")
    assert not r.secret("author") and not r.secret("name")
    assert Redactor(["only"]).secret("only") and not Redactor(["only"]).secret("password")
