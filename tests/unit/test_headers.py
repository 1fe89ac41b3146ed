"""The header rules (`api.headers`) on their own: which must-come-once headers came more
than once, and list headers' lines joined. Their answers over a socket:
tests/database/test_hostile_requests.py."""

from __future__ import annotations

from api import headers

KEY = (b"authorization", b"Bearer rj_some_key")
JSON = (b"content-type", b"application/json")


def test_the_rules_name_each_header_sent_twice_and_join_list_lines() -> None:
    raw = [KEY, JSON, KEY, (b"idempotency-key", b"a"), (b"idempotency-key", b"b"), KEY]
    assert headers.repeated(raw) == [(b"authorization", 3), (b"idempotency-key", 2)]
    assert headers.repeated([KEY, JSON, (b"if-none-match", b"1"), (b"if-none-match", b"2")]) == []
    lines = [(b"if-none-match", b'"1"'), KEY, (b"if-none-match", b'"2"'), JSON]
    assert headers.joined(lines) == [(b"if-none-match", b'"1", "2"'), KEY, JSON]
    assert headers.joined([KEY, (b"if-none-match", b'"1"')]) == [KEY, (b"if-none-match", b'"1"')]
