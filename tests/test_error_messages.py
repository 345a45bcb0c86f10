"""Messages built from what another program said stay one line, and short."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from hypothesis import given
from hypothesis import strategies as st

from sessionflow import BackendError
from sessionflow._dynamodb_client import dynamodb_errors
from sessionflow._errors import MESSAGE_LIMIT, one_line

HTML_PAGE = "<!DOCTYPE HTML>\n<html>\n  <body>\n    <h1>Error response</h1>\n" + "x" * 900


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=2 * MESSAGE_LIMIT))
def test_one_line_keeps_the_words_on_one_bounded_line(text: str) -> None:
    flat = one_line(text)
    words = " ".join(text.split())
    assert not any(char.isspace() and char != " " for char in flat)
    if len(words) <= MESSAGE_LIMIT:
        assert flat == words
    else:
        assert flat == words[: MESSAGE_LIMIT - 1] + "…"


def test_a_short_message_is_kept_whole() -> None:
    assert one_line("  table   missing\n") == "table missing"


def test_an_html_error_page_from_a_non_dynamodb_server_is_one_short_line() -> None:
    answer = {"Error": {"Code": "501", "Message": HTML_PAGE}}
    with pytest.raises(BackendError) as raised, dynamodb_errors():
        raise ClientError(answer, "DescribeTable")
    message = str(raised.value)
    assert message.startswith("DynamoDB refused the request: 501: An error occurred (501)")
    assert "\n" not in message
    assert len(message) < MESSAGE_LIMIT + 60


def test_a_connection_failure_names_the_endpoint() -> None:
    with pytest.raises(BackendError, match=r"http://127\.0\.0\.1:1/"), dynamodb_errors():
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1/")
