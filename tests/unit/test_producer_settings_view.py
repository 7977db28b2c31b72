"""Settings rows for `lmq config show` and the README table: values, descriptions, masking."""

from __future__ import annotations

from pydantic import SecretStr

from producers.settings_view import mask_url, setting_rows
from workers.settings import Settings


def test_mask_url_hides_only_the_password() -> None:
    assert mask_url("redis://user:s3cret@host:6379/0") == "redis://user:****@host:6379/0"
    assert mask_url("redis://:s3cret@host/1") == "redis://:****@host/1"
    assert mask_url("redis://host:6379/0") == "redis://host:6379/0"


def test_rows_cover_every_field_with_descriptions_and_masked_secrets() -> None:
    settings = Settings.model_construct(
        **{**Settings.model_construct().__dict__,
           "broker_url": "redis://u:pw@h:1/0", "flower_basic_auth": SecretStr("a:b")})
    rows = {row.env_var: row for row in setting_rows(settings)}
    assert set(rows) == {f"LMQ_{name.upper()}" for name in Settings.model_fields}
    assert all(row.description for row in rows.values())
    assert rows["LMQ_BROKER_URL"].value == "redis://u:****@h:1/0"
    assert rows["LMQ_FLOWER_BASIC_AUTH"].value == "****"
    assert rows["LMQ_SLOTS"].value == "4" and rows["LMQ_MODEL"].value == "(unset)"
