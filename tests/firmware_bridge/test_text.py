"""The text wire protocol parser: every accepted form, every rejection reason, fuzzing."""
from __future__ import annotations

import re
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.text import (
    MAX_LINE, REASONS, Comment, Header, Reset, Sample, TextParser, format_prediction, format_sample,
    parse_lines,
)
from runtime.errors import FrameError

NAMES = ("ax", "ay", "az")


@pytest.fixture
def parser() -> TextParser:
    return TextParser(NAMES)


def values_of(event) -> list[float]:
    assert isinstance(event, Sample), event
    assert event.values.dtype == np.float32 and event.values.shape == (3,)
    return event.values.tolist()


@pytest.mark.parametrize("line", [
    b"1,2,3", b"1 2 3", b"1\t2\t3", b"1, 2,\t3", b"  1,,2 \t 3  ", b"1,2,3\r", b",1,2,3,",
    b"ax:1 ay:2 az:3", b"az:3,ax:1,ay:2", b"ax: 1, ay :2, az : 3", b"ay:2\taz:3\tax:1\r",
    b"1.0,2.,+3", b"1e0,0.2e1,300E-2",
])
def test_accepted_forms(parser, line):
    assert values_of(parser.parse_line(line)) == [1.0, 2.0, 3.0]


def test_values_are_float32(parser):
    assert values_of(parser.parse_line(b".1,-.5,-2.5e-3")) == np.array([0.1, -0.5, -2.5e-3], np.float32).tolist()


def test_header_sets_column_order_until_the_next_header(parser):
    assert parser.parse_line(b"az,ax,ay") == Header(("az", "ax", "ay"))
    assert values_of(parser.parse_line(b"3,1,2")) == [1.0, 2.0, 3.0]
    assert values_of(parser.parse_line(b"ax:1 ay:2 az:3")) == [1.0, 2.0, 3.0]  # pairs ignore the order
    assert parser.parse_line(b"ay ax az\r") == Header(("ay", "ax", "az"))
    assert values_of(parser.parse_line(b"2 1 3")) == [1.0, 2.0, 3.0]


def test_header_columns_that_are_no_feature_are_skipped(parser):
    assert parser.parse_line(b"millis,az,ax,ay,temp") == Header(("millis", "az", "ax", "ay", "temp"))
    assert parser.order == (-1, 2, 0, 1, -1)
    assert values_of(parser.parse_line(b"1200,3,1,2,21.5")) == [1.0, 2.0, 3.0]  # the numeric shortcut
    assert values_of(parser.parse_text(b"1200 3 1 2 21.5")) == [1.0, 2.0, 3.0]  # the general path
    with pytest.raises(FrameError) as e:
        parser.parse_line(b"3,1,2")
    assert (e.value.reason, e.value.detail) == ("field_count", "3 values, expected 5")
    with pytest.raises(FrameError) as e:
        parser.parse_line(b"1200,3,1,2,warm")  # a skipped column still holds a number
    assert e.value.reason == "not_numeric"
    assert values_of(parser.parse_line(b"ax:1 ay:2 az:3")) == [1.0, 2.0, 3.0]
    assert parser.parse_line(b"ax,ay,az") == Header(("ax", "ay", "az")) and parser.order == (0, 1, 2)
    assert values_of(parser.parse_line(b"1,2,3")) == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("line, detail", [(b"ax,ay", "header lacks az"), (b"ax,ay,az,ax", "header names ax twice"),
                                          (b"ax,ax,ay", "header lacks az"), (b"t,ax,ay", "header lacks az"),
                                          (b"t,ax,ay,az,t", "header names t twice")])
def test_header_must_name_every_feature_once(parser, line, detail):
    with pytest.raises(FrameError) as e:
        parser.parse_line(line)
    assert e.value.reason == "field_count" and e.value.detail == detail
    assert parser.order == (0, 1, 2)


def test_comments_reset_and_blank_lines(parser):
    assert parser.parse_line(b"#reset") == Reset()
    assert parser.parse_line(b"  # RESET \r") == Reset()
    assert parser.parse_line(b"# booting, 3 features") == Comment("booting, 3 features")
    assert parser.parse_line(b"#") == Comment("")
    assert parser.parse_line(b"") is None
    assert parser.parse_line(b" \t\r") is None


@pytest.mark.parametrize("line, reason", [
    (b"1,2", "field_count"),
    (b"1,2,3,4", "field_count"),
    (b"ax:1 ay:2", "field_count"),
    (b"ax:1 ax:2 az:3", "field_count"),
    (b"ax:1 2 az:3", "field_count"),
    (b"1,x,3", "not_numeric"),
    (b"hello world", "not_numeric"),
    (b"1_0,2,3", "not_numeric"),
    (b"0x10,2,3", "not_numeric"),
    (b"1,2,3;", "not_numeric"),
    (b"1\x002\x003", "not_numeric"),
    (b"1\x0b2\x0b3", "not_numeric"),
    ("1\u20032\u20033".encode(), "not_numeric"),
    ("\u0661,2,3".encode(), "not_numeric"),  # an Arabic-Indic digit: float() would take it
    (b"ax:1 ay:two az:3", "not_numeric"),
    (b"nan,1,2", "non_finite"),
    (b"1,-inf,2", "non_finite"),
    (b"Infinity,1,2", "non_finite"),
    (b"1e39,0,0", "non_finite"),
    (b"ax:1 ay:NaN az:3", "non_finite"),
    (b"ax:1 ay:2 bx:3", "unknown_name"),
    (b"\xff\xfe1,2,3", "bad_encoding"),
    (b"1,2,\xc3", "bad_encoding"),
    (b"1" * (MAX_LINE + 1), "line_too_long"),
])
def test_rejections(parser, line, reason):
    assert reason in REASONS
    with pytest.raises(FrameError) as e:
        parser.parse_line(line)
    assert e.value.reason == reason
    assert e.value.exit_code == 6


def test_line_cap_is_on_the_content(parser):
    line = b"1," + b" " * (MAX_LINE - 4) + b"2,3"
    assert len(line) == MAX_LINE + 1
    with pytest.raises(FrameError, match="line_too_long"):
        parser.parse_line(line)
    ok = b"1," + b" " * (MAX_LINE - 5) + b"2,3"
    assert len(ok) == MAX_LINE
    assert values_of(parser.parse_line(ok + b"\r")) == [1.0, 2.0, 3.0]


def test_float32_extremes(parser):
    top = str(np.finfo(np.float32).max).encode()
    assert values_of(parser.parse_line(b"-" + top + b",0," + top))[2] == float(np.finfo(np.float32).max)
    assert values_of(parser.parse_line(b"1e-50,0,0"))[0] == 0.0  # underflow is finite


def test_parse_lines_keeps_errors_in_place(parser):
    out = parse_lines(parser, [b"1,2,3", b"", b"x", b"#reset"])
    assert isinstance(out[0], Sample) and isinstance(out[1], FrameError) and out[2] == Reset()
    assert len(out) == 3


def test_parser_needs_distinct_names():
    with pytest.raises(ValueError, match="duplicate"):
        TextParser(["a", "a"])
    with pytest.raises(ValueError, match="at least one"):
        TextParser([])


@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=3, max_size=3))
def test_format_sample_round_trips_exactly(values):
    line = format_sample(values)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    got = TextParser(NAMES).parse_line(line[:-1])
    assert got.values.tobytes() == np.array(values, np.float32).tobytes()


def test_format_prediction():
    assert format_prediction([0.25, 0.75], "walk") == b"p=0.25,0.75 c=walk\n"
    assert format_prediction(np.array([0.123456789], np.float32), "1") == b"p=0.123457 c=1\n"


# ----------------------------------------------------------------------------- fuzzing

_FLOAT_CHARS = set("0123456789+-.eE")


def expected_sample(line: bytes, names=NAMES):
    """An independent oracle: the float32 values a valid sample line carries, else None."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) > MAX_LINE:
        return None
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return None
    text = re.sub(r"[ \t]*:[ \t]*", ":", text)
    if text.strip(" \t").startswith("#"):
        return None
    tokens = [t for t in re.split(r"[ ,\t]+", text) if t]

    def number(t):
        if not t or not set(t) <= _FLOAT_CHARS:
            return None
        try:
            v = np.float64(float(t))
        except ValueError:
            return None
        with np.errstate(over="ignore"):
            f = np.float32(v)
        return f if np.isfinite(f) else None

    if any(":" in t for t in tokens):
        pairs = [t.split(":", 1) for t in tokens]
        if any(len(p) != 2 for p in pairs) or sorted(p[0] for p in pairs) != sorted(names):
            return None
        got = {k: number(v) for k, v in pairs}
        values = [got[n] for n in names]
    else:
        if len(tokens) != len(names):
            return None
        values = [number(t) for t in tokens]
    return None if any(v is None for v in values) else np.array(values, np.float32)


_token = st.one_of(
    st.sampled_from(["1", "-2.5", ".5", "5.", "1e3", "1e39", "nan", "inf", "x", "ax", "ay", "az", "bx", "#", ""]),
    st.floats(width=32).map(str),
    st.text(alphabet="0123456789.eE+-x", max_size=6),
)
_sep = st.sampled_from([",", " ", "\t", ", ", ":", " : "])


@st.composite
def near_valid_lines(draw) -> bytes:
    tokens = draw(st.lists(_token, min_size=0, max_size=5))
    seps = draw(st.lists(_sep, min_size=len(tokens), max_size=len(tokens)))
    line = "".join(t + s for t, s in zip(tokens, seps))
    return (line + draw(st.sampled_from(["", "\r", " "]))).encode()


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=80), near_valid_lines(), st.binary(min_size=MAX_LINE - 2, max_size=MAX_LINE + 3)))
def test_fuzz_only_valid_lines_become_samples(line):
    expected = expected_sample(line)
    try:
        event = TextParser(NAMES).parse_line(line)
    except FrameError as e:
        assert e.reason in REASONS
        assert expected is None, f"valid line {line!r} rejected: {e}"
        return
    if expected is None:
        assert not isinstance(event, Sample), f"{line!r} became {event}"
    else:
        assert isinstance(event, Sample) and event.values.tobytes() == expected.tobytes()


def _outcome(parse, line: bytes):
    try:
        event = parse(line)
    except FrameError as e:
        return ("rejected", e.reason)
    if isinstance(event, Sample):
        return ("sample", event.values.dtype.name, event.values.tobytes())
    return ("event", event)


_numeric = st.one_of(st.floats(width=32, allow_nan=False, allow_infinity=False).map(str),
                     st.sampled_from(["1e39", "-3.4028236e38", "3.4028235e38", "1e-50", ".5", "5.", "+1"]))


@st.composite
def numeric_rows(draw) -> bytes:
    tokens = draw(st.lists(_numeric, min_size=1, max_size=5))
    seps = draw(st.lists(st.sampled_from([",", " ", "\t", ", ", ",,"]), min_size=len(tokens), max_size=len(tokens)))
    lead = draw(st.sampled_from(["", " ", ","]))
    return (lead + "".join(t + s for t, s in zip(tokens, seps)) + draw(st.sampled_from(["", "\r"]))).encode()


_number_bytes = st.lists(st.sampled_from(list(b"0123456789+-.eE, \t:#\rxan") + [0xff, 0xc3]), max_size=60)


@settings(max_examples=600, deadline=None)
@given(st.one_of(numeric_rows(), near_valid_lines(), _number_bytes.map(bytes)),
       st.sampled_from([None, b"az,ax,ay", b"ax,ay,az"]))
def test_numeric_row_shortcut_gives_what_the_general_parser_gives(line, header):
    fast, general = TextParser(NAMES), TextParser(NAMES)
    if header is not None:
        fast.parse_line(header)
        general.parse_text(header)
    assert _outcome(fast.parse_line, line) == _outcome(general.parse_text, line)


def test_received_time_is_carried_into_events(parser):
    assert parser.parse_line(b"1,2,3", 12.5).received == 12.5  # the numeric-row shortcut
    assert parser.parse_line(b"ax:1 ay:2 az:3", 13.0).received == 13.0
    assert parser.parse_line(b"#reset", 14.0) == Reset(None, 14.0)


# --------------------------------------------------------------- adversarial lines

def _up_to_cap(unit: bytes, tail: bytes = b"x") -> bytes:
    return unit * ((MAX_LINE - len(tail)) // len(unit)) + tail


ADVERSARIAL = {
    "short backtracking line": b"11111," * 12 + b"x",
    "realistic line with a unit": b"1023,512,498,1000,2000,3000,4000,1234,4321,1111,2222,3333mV",
    "repeated fields then junk": _up_to_cap(b"11111,"),
    "one long number then junk": _up_to_cap(b"1"),
    "digits and dots": _up_to_cap(b"1."),
    "exponents": _up_to_cap(b"1e1"),
    "signs": _up_to_cap(b"+-"),
    "separator runs": b"1" + b" ,\t" * 340 + b"x",
    "blank runs without a colon": b"1" + b" " * (MAX_LINE - 2) + b"x",
    "colons": b":" * MAX_LINE,
    "blanks around colons": _up_to_cap(b" : "),
    "pairs without names": _up_to_cap(b":1 "),
    "pairs of one name": _up_to_cap(b"ax:1 "),
    "header words": _up_to_cap(b"ax,"),
    "non-finite words": _up_to_cap(b"nan,"),
    "a number at the cap": b"1" * MAX_LINE,
    "over the cap": b"11111," * 1000,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_lines_finish_in_linear_time(name):
    """Each line takes microseconds; a backtracking parse took seconds to minutes on the
    first two. The limit is generous (a thousand times the expected time) so that a
    loaded machine cannot fail it, yet any super-linear parse blows through it."""
    line = ADVERSARIAL[name]
    assert len(line) <= MAX_LINE or name == "over the cap"
    best = float("inf")
    for _ in range(3):
        parser = TextParser(NAMES)
        started = time.process_time()
        for _ in range(10):
            try:
                parser.parse_line(line)
            except FrameError as e:
                assert e.reason in REASONS
        best = min(best, (time.process_time() - started) / 10)
    assert best < 0.05, f"{name}: {best * 1e3:.1f} ms for {len(line)} bytes"
