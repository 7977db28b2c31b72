"""Flower's auth decision (`workers.flower.config.check_auth`) on Flower's parsed options.

The real `celery -A workers flower` runs in tests/integration/test_flower.py; here only the
decision, on a stand-in for tornado's parsed options.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import SecretStr

from workers.flower.config import (
    EXIT_NO_AUTH,
    LOCALHOST,
    NO_AUTH_REFUSAL,
    check_auth,
    option_values,
)
from workers.settings import Settings


def parsed(basic_auth: list[str] | None = None, auth: str = "",
           address: str = "") -> SimpleNamespace:
    return SimpleNamespace(basic_auth=basic_auth, auth=auth, address=address)


@pytest.mark.parametrize("options", [parsed(), parsed(basic_auth=[""])], ids=["unset", "empty"])
def test_no_auth_refuses_with_one_line_and_exit_78(options, capsys):
    with pytest.raises(SystemExit) as exit_:
        check_auth(options, allow_no_auth=False)
    assert exit_.value.code == EXIT_NO_AUTH == 78
    assert capsys.readouterr().err == NO_AUTH_REFUSAL + "\n"
    assert "LMQ_FLOWER_BASIC_AUTH=user:password" in NO_AUTH_REFUSAL


@pytest.mark.parametrize("options", [parsed(basic_auth=["a:b"]), parsed(auth=r".*@x\.org")],
                         ids=["basic", "oauth"])
def test_any_auth_starts_on_the_address_flower_was_given(options):
    check_auth(options, allow_no_auth=False)
    assert options.address == ""  # Flower's default: all interfaces


def test_opt_out_binds_localhost_unless_an_address_was_given(caplog, monkeypatch):
    monkeypatch.delenv("FLOWER_UNAUTHENTICATED_API", raising=False)
    options = parsed()
    check_auth(options, allow_no_auth=True)
    assert options.address == LOCALHOST
    assert "WITHOUT auth" in caplog.text and "stays off" in caplog.text
    given = parsed(address="10.0.0.5")
    check_auth(given, allow_no_auth=True)
    assert given.address == "10.0.0.5"


def test_option_values_carry_the_credentials_but_no_address():
    settings = Settings(flower_basic_auth=SecretStr(" a:b , c:d ,"), _env_file=None)
    values = option_values(settings)
    assert values["basic_auth"] == ["a:b", "c:d"] and "address" not in values
    assert "basic_auth" not in option_values(Settings(flower_basic_auth=None, _env_file=None))


def test_the_opt_out_is_off_by_default():
    assert Settings.model_fields["flower_allow_no_auth"].default is False


def test_opt_out_warns_that_the_api_is_on_when_flower_is_told_so(caplog, monkeypatch):
    monkeypatch.setenv("FLOWER_UNAUTHENTICATED_API", "true")
    check_auth(parsed(), allow_no_auth=True)
    assert "HTTP API (Revoke/Terminate, /api/...) is ON" in caplog.text
    assert "stays off" not in caplog.text
