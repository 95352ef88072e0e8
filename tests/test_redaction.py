"""What a product writes in its own logs is scrubbed before a log tail leaves the machine in a
feedback: the secrets the configuration names, and what looks like one although nothing
configured it (a credential the product logs by itself)."""

import pytest

from greenlight.updater.product import REDACTED, scrub

SECRET = "s3cr3t-Value_42"


@pytest.mark.parametrize("line", [
    f"Authorization: Bearer {SECRET}",
    f"Authorization: Basic {SECRET}",
    f"authorization: digest {SECRET}",
    f'{{"token": "{SECRET}"}}',
    f"api_token='{SECRET}'",
    f"password={SECRET}",
    f"db_pwd: {SECRET}",
    f"private_key={SECRET}",
    f"X-Api-Key: {SECRET}",
    f"Cookie: session={SECRET}",
    f"connecting to https://admin:{SECRET}@db.internal/app",
    f"client_credential = {SECRET}",
])
def test_what_looks_like_a_secret_is_scrubbed_though_nothing_configured_it(line):
    said = scrub(line, [])
    assert SECRET not in said and REDACTED in said, said


def test_the_configured_secrets_go_however_they_are_written():
    said = scrub(f"loaded {SECRET} from the file; then {SECRET}!", [SECRET])
    assert SECRET not in said and said.count(REDACTED) == 2


def test_ordinary_text_is_left_alone():
    line = "core listening on 127.0.0.1:8080; 3 sessions open, ui connected"
    assert scrub(line, []) == line
