"""Pure logic: ids, the codec, policies, clocks (no servers)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import resource
import secrets
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from sessionflow import (
    Codec,
    CodecError,
    ConfigError,
    InvalidAttribute,
    InvalidSessionId,
    ManualClock,
    SessionPolicy,
    SessionTooLarge,
    new_session_id,
    storage_key,
    validate_session_id,
)
from sessionflow._codec import pack_fields, unpack_fields
from sessionflow._policy import LONGEST_SECONDS

ROOT = Path(__file__).resolve().parent.parent

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def test_new_ids_carry_256_bits_and_validate() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    for session_id in list(ids)[:50]:
        assert validate_session_id(session_id) == session_id
        assert len(base64.urlsafe_b64decode(session_id + "=")) == 32


def test_storage_key_is_the_sha256_of_the_id() -> None:
    session_id = new_session_id()
    assert storage_key(session_id) == hashlib.sha256(session_id.encode()).hexdigest()
    assert session_id not in storage_key(session_id)


def test_non_canonical_spelling_of_an_id_is_refused() -> None:
    raw = secrets.token_bytes(32)
    canonical = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    last = canonical[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # The last character carries 2 unused bits: its 3 siblings decode to the same bytes.
    index = alphabet.index(last)
    sibling = alphabet[(index & ~3) | ((index + 1) & 3)]
    with pytest.raises(InvalidSessionId, match="canonical"):
        validate_session_id(canonical[:-1] + sibling)


@given(st.text(max_size=60))
def test_arbitrary_text_is_either_a_valid_id_or_refused(text: str) -> None:
    try:
        validate_session_id(text)
    except InvalidSessionId as exc:
        message = str(exc)
    else:
        assert len(base64.urlsafe_b64decode(text + "=")) == 32
        return
    assert text not in message or len(text) < 3


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@given(value=JSON_VALUES)
def test_codec_round_trips_json_values(fmt: str, value: object) -> None:
    codec = Codec(format=fmt, compress_threshold=64)  # type: ignore[arg-type]
    encoded = codec.encode("name", value)
    decoded, fingerprint = codec.decode_with_fingerprint(encoded.stored)
    assert decoded == value
    assert fingerprint == encoded.fingerprint


def test_codec_compresses_large_values_and_marks_them() -> None:
    codec = Codec(compress_threshold=100)
    value = {"items": ["laptop-123|2|$999.99"] * 500}
    encoded = codec.encode("cart", value)
    assert encoded.stored[1] & 0b100
    assert len(encoded.stored) < len(encoded.fingerprint) / 5
    assert codec.decode(encoded.stored) == value
    small = codec.encode("n", 1)
    assert not small.stored[1] & 0b100


def test_fingerprints_ignore_dict_order() -> None:
    codec = Codec()
    assert codec.fingerprint("a", {"x": 1, "y": 2}) == codec.fingerprint("a", {"y": 2, "x": 1})


@pytest.mark.parametrize(
    "stored",
    [
        b"",
        b"\x01",
        b"\x02\x00{}",
        b"\x01\x80{}",
        b"\x01\x00{bad",
        b"\x01\x04not zstd",
        b"\x01\x03x",
    ],
    ids=["empty", "header-only", "version", "flags", "json", "zstd", "format"],
)
def test_undecodable_envelopes_raise_codec_error(stored: bytes) -> None:
    with pytest.raises(CodecError):
        Codec().decode(stored)


@given(st.binary(max_size=64))
def test_decoding_never_raises_anything_but_codec_error(stored: bytes) -> None:
    with contextlib.suppress(CodecError):
        Codec().decode(stored)


def test_size_guard_counts_names_and_values() -> None:
    codec = Codec(max_session_bytes=100)
    assert codec.check_size({"a": b"x" * 99}, {"a": b"1"}) == 100
    with pytest.raises(SessionTooLarge, match="101 bytes encoded"):
        codec.check_size({"ab": b"x" * 99}, {"ab": b"1"})


def test_size_guard_holds_what_compressed_values_decode_to() -> None:
    codec = Codec(max_decoded_bytes=1_000_000)
    small = codec.encode("a", "x" * 999_000)
    assert len(small.stored) < 1_000  # zstd: the stored limit alone would let it through
    assert codec.check_size({"a": small.stored}, {"a": small.fingerprint}) < 1_000
    big = codec.encode("a", "x" * 1_000_000)
    with pytest.raises(SessionTooLarge, match=r"1000003 bytes decoded, over the 1000000"):
        codec.check_size({"a": big.stored}, {"a": big.fingerprint})


@pytest.mark.parametrize("announces_size", [True, False], ids=["announced", "unannounced"])
def test_a_compressed_value_holding_more_than_the_limit_is_refused_before_it_is_inflated(
    announces_size: bool,
) -> None:
    """zstd allocates what a frame announces and ignores max_output_size for such frames."""
    bomb = zstandard.ZstdCompressor(write_content_size=announces_size).compress(
        b'"' + b"x" * 200_000_000 + b'"'
    )
    stored = b"\x01\x04" + bomb  # JSON, zstd: 200 MB in about 6 KB
    assert len(stored) < 10_000
    codec = Codec()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CodecError, match=f"{codec.max_decoded_bytes} bytes"):
        codec.decode(stored)
    with pytest.raises(CodecError):
        codec.decode_fields({"a": stored})
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100_000  # the 200 MB were never allocated


def test_attributes_share_one_decoded_budget() -> None:
    writer = Codec()
    fields = {name: writer.encode(name, "x" * 600_000).stored for name in ("a", "b")}
    assert len(writer.decode_fields(fields)) == 2
    reader = Codec(max_decoded_bytes=1_000_000)
    assert reader.decode(fields["a"]) == "x" * 600_000  # each alone fits
    for read in (reader.decode_fields, reader.fingerprints):
        with pytest.raises(CodecError, match="the 1000000 bytes"):
            read(fields)


def test_codec_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="format"):
        Codec(format="pickle")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_session_bytes"):
        Codec(max_session_bytes=500_000)
    with pytest.raises(ConfigError, match="compress_threshold"):
        Codec(compress_threshold=0)
    with pytest.raises(ConfigError, match="max_decoded_bytes"):
        Codec(max_decoded_bytes=0)


def test_non_json_values_name_the_attribute() -> None:
    with pytest.raises(InvalidAttribute, match="'when'"):
        Codec().encode("when", {1, 2})


@pytest.mark.parametrize("codec_format", ["json", "msgpack"])
@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), [1.5, float("-inf")], {"cart": {"total": float("nan")}}],
)
def test_nan_and_infinities_are_refused_not_turned_into_null(codec_format, value) -> None:
    with pytest.raises(InvalidAttribute, match=r"'price' holds NaN or an infinity"):
        Codec(format=codec_format).encode("price", value)


@given(st.recursive(st.none() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)))  # fmt: skip
def test_finite_values_with_nulls_round_trip(value: object) -> None:
    codec = Codec()
    assert codec.decode(codec.encode("v", value).stored) == value


def test_field_blobs_round_trip_and_reject_garbage() -> None:
    fields = {"a": b"\x01\x001", "b": b"\x01\x00[]"}
    assert unpack_fields(pack_fields(fields)) == fields
    for garbage in (b"", b"\x01\x00\xc1", b"\x09\x00", b"\x01\x00" + msgpack.packb([1, 2])):
        with pytest.raises(CodecError):
            unpack_fields(garbage)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"idle_timeout": 0},
        {"absolute_timeout": -1},
        {"touch_interval": -1},
        {"max_sessions_per_user": 0},
        {"max_save_retries": -1},
        {"on_conflict": "merge-somehow"},
        {"tombstone_seconds": 0},
        {"idle_timeout": math.nan},
        {"absolute_timeout": math.inf},
        {"touch_interval": math.nan},
        {"tombstone_seconds": math.nan},
        {"idle_timeout": 1e300, "absolute_timeout": 1e300},
        {"idle_timeout": True},
        # counts took fractions and bools: a cap of 2.5 sessions, True retries
        {"max_sessions_per_user": 2.5},
        {"max_sessions_per_user": True},
        {"max_save_retries": 2.5},
        {"max_save_retries": True},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SessionPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_session_bytes": 2.5}, "max_session_bytes must be a whole number"),
        ({"max_session_bytes": True}, "max_session_bytes must be a whole number"),
        ({"max_decoded_bytes": 1e9}, "max_decoded_bytes must be a whole number"),
        ({"compress_threshold": math.inf}, "compress_threshold must be a whole number"),
    ],
)
def test_codec_sizes_are_whole_numbers_of_bytes(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Codec(**kwargs)  # type: ignore[arg-type]


def test_a_timeout_out_of_range_names_itself_and_its_value() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^idle_timeout must be a positive number of seconds "
        r"up to 100 years, not nan$",
    ):
        SessionPolicy(idle_timeout=math.nan)
    with pytest.raises(ConfigError, match="touch_interval must be a number of seconds from 0"):
        SessionPolicy(touch_interval=-1)
    longest = SessionPolicy(idle_timeout=LONGEST_SECONDS, absolute_timeout=LONGEST_SECONDS)
    assert longest.absolute_timeout == LONGEST_SECONDS


def test_manual_clock_moves_only_forward() -> None:
    clock = ManualClock(start=100.0)
    clock.advance(5)
    assert clock.now() == 105.0
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)


def test_generated_sync_code_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "unasync.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
