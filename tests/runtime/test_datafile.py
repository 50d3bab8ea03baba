"""Reading data files (runtime.datafile, runtime.datacsv): columns, dialects, labels,
variable lengths, and every bad input as one exact line."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from runtime.datacsv import MAX_CSV_BYTES, sniff_delimiter
from runtime.datafile import MAX_CLASSES, Columns, read_sequences, used_classes
from runtime.errors import DataError


def _csv(tmp_path, text: str | bytes, name: str = "d.csv"):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def _rows(seqs) -> list[list[list[float]]]:
    return [np.round(x.astype(np.float64), 4).tolist() for x in seqs.X]


# -- columns ----------------------------------------------------------------------------
def test_time_like_columns_are_dropped_with_a_log_line_naming_them(tmp_path, caplog):
    p = _csv(tmp_path, "Timestamp,ms,ax,counter,ay,label\n"
                       "2024-01-01T00:00:00Z,0,0.5,10,1,0\n2024-01-01T00:00:01Z,10,0.1,11,0,1\n"
                       "2024-01-01T00:00:02Z,20,0.7,12,2,0\n2024-01-01T00:00:03Z,30,0.2,13,1,0\n"
                       "2024-01-01T00:00:04Z,40,0.3,14,0,1\n")
    with caplog.at_level(logging.INFO):
        s = read_sequences(p, require_labels=True)
    assert s.feature_names == ("ax", "ay")
    assert _rows(s) == [[[0.5, 1], [0.1, 0], [0.7, 2], [0.2, 1], [0.3, 0]]]
    messages = [r.getMessage() for r in caplog.records]
    assert f"{p}: column(s) Timestamp, ms look like time and are not features (list the features in " \
           "[data] features to keep them)" in messages
    assert f"{p}: column(s) counter rise at every row, like a clock, and are not features (list the " \
           "features in [data] features to keep them)" in messages


def test_a_rising_column_is_kept_when_it_rises_too_few_times_or_falls_once(tmp_path):
    short = _csv(tmp_path, "a,b\n1,5\n2,4\n3,6\n", "short.csv")
    assert read_sequences(short).feature_names == ("a", "b")
    # within each sequence rising, but a time column resetting per recording still counts
    per_rec = _csv(tmp_path, "sequence,t2,a,label\n" + "".join(
        f"{s},{i},{(i * 7 + s) % 5},{s % 2}\n" for s in range(2) for i in range(4)), "rec.csv")
    assert read_sequences(per_rec).feature_names == ("a",)


def test_features_chosen_by_name_in_their_order_case_insensitive(tmp_path):
    p = _csv(tmp_path, "Time,AX,ay,az,Label\n0,1,2,3,0\n1,4,5,6,1\n")
    s = read_sequences(p, columns=Columns(features=("az", "ax")))
    assert s.feature_names == ("az", "AX") and _rows(s) == [[[3, 1], [6, 4]]]
    # a time-like column is kept when named
    assert read_sequences(p, columns=Columns(features=("time", "ay"))).feature_names == ("Time", "ay")
    assert read_sequences(p).y.tolist() == [1]  # "Label" is the label column


def test_other_label_and_sequence_columns(tmp_path):
    p = _csv(tmp_path, "rec,x,y,class\na,1,2,walk\na,3,4,walk\nb,5,6,run\n")
    s = read_sequences(p, require_labels=True, columns=Columns(label="CLASS", sequence="Rec"))
    assert s.feature_names == ("x", "y") and [len(x) for x in s.X] == [2, 1]
    assert s.class_names == ("run", "walk") and s.y.tolist() == [1, 0]


def test_ids_and_non_numeric_columns_are_not_features(tmp_path, caplog):
    p = _csv(tmp_path, "device,ax,ay,label\nboard-1,1,2,0\nboard-1,3,1,1\n")
    with caplog.at_level(logging.WARNING):
        s = read_sequences(p)
    assert s.feature_names == ("ax", "ay")
    assert f"{p}: column(s) device are not numeric and are not features" in [r.getMessage() for r in caplog.records]


def test_headerless_csv_is_positional(tmp_path):
    p = _csv(tmp_path, "1,2,3\n4,5,6\n")
    assert read_sequences(p).feature_names == ("f0", "f1", "f2")
    s = read_sequences(p, columns=Columns(features=("ax", "ay", "az")))
    assert s.feature_names == ("ax", "ay", "az") and _rows(s) == [[[1, 2, 3], [4, 5, 6]]]


# -- dialects ---------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "ax,ay,label\n0.5,1.5,0\n2,3,1\n",
    "ax;ay;label\n0,5;1,5;0\n2;3;1\n",  # semicolons with decimal commas
    "ax;ay;label\n0.5;1.5;0\n2;3;1\n",
    "ax\tay\tlabel\n0.5\t1.5\t0\n2\t3\t1\n",
    '"ax","ay","label"\n0.5,1.5,0\n2,3,1\n',  # quoted header
    '"ax";"ay";"label"\r\n"0,5";"1,5";"0"\r\n2;3;1\r\n',
    "\ufeffax,ay,label\n0.5,1.5,0\n2,3,1\n",  # UTF-8 byte-order mark
    " ax , ay ,label\n\n0.5, 1.5,0\n2,3,1\n\n",  # blanks around names and values, blank lines
], ids=["comma", "semicolon-decimal-comma", "semicolon", "tab", "quoted", "quoted-semicolon-crlf", "bom",
        "blanks"])
def test_csv_dialects_read_the_same(tmp_path, text):
    s = read_sequences(_csv(tmp_path, text), require_labels=True)
    assert s.feature_names == ("ax", "ay")
    assert _rows(s) == [[[0.5, 1.5], [2, 3]]] and s.y.tolist() == [1]


def test_bom_never_reaches_a_feature_name(tmp_path):
    s = read_sequences(_csv(tmp_path, b"\xef\xbb\xbfax,ay\n1,2\n"))
    assert s.feature_names == ("ax", "ay")
    assert all("\ufeff" not in n for n in s.feature_names)


def test_delimiter_sniffing():
    assert sniff_delimiter("a;b;c\n1;2;3\n") == ";"
    assert sniff_delimiter("a\tb\n1\t2\n") == "\t"
    assert sniff_delimiter('a,"b;c",d\n1,2,3\n') == ","  # a semicolon inside quotes is no delimiter
    assert sniff_delimiter("a\n1\n") == ","


# -- labels -----------------------------------------------------------------------------
def test_text_labels_become_sorted_class_indexes(tmp_path, caplog):
    p = _csv(tmp_path, "sequence,ax,label\n1,0,shake\n1,1,shake\n2,2,idle\n3,3,walk\n3,4,idle\n")
    s = read_sequences(p, require_labels=True)
    assert s.class_names == ("idle", "shake", "walk")
    assert s.y.tolist() == [1, 0, 0]  # a sequence's label is its last row's
    assert [x.tolist() for x in s.step_labels] == [[1, 1], [0], [2, 0]]
    kept = used_classes(s)  # "walk" labels no sequence
    assert kept.class_names == ("idle", "shake") and kept.y.tolist() == [1, 0, 0]
    assert f"{p}: class(es) walk label no sequence and are left out" in caplog.text


def test_integer_labels_stay_indexes(tmp_path):
    s = read_sequences(_csv(tmp_path, "ax,label\n1,0\n2,2.0\n"))
    assert s.class_names is None and s.y.tolist() == [2] and s.step_labels[0].tolist() == [0, 2]


# -- variable lengths -------------------------------------------------------------------
def test_csv_sequence_column_gives_recordings_of_different_lengths(tmp_path):
    p = _csv(tmp_path, "sequence,ax,label\n" + "".join(f"{s},{i % 3},{s % 2}\n" for s, n in enumerate([3, 5, 1])
                                                        for i in range(n)))
    s = read_sequences(p, require_labels=True)
    assert [len(x) for x in s.X] == [3, 5, 1] and s.lengths() == {1, 3, 5}
    assert s.X[1][:, 0].tolist() == [0, 1, 2, 0, 1]


def test_npz_lengths_cut_padded_recordings(tmp_path):
    X = np.full((3, 4, 2), np.nan, np.float32)  # padding may be anything, even NaN
    for i, n in enumerate([4, 2, 3]):
        X[i, :n] = np.arange(n * 2).reshape(n, 2) + 10 * i
    p = tmp_path / "v.npz"
    np.savez(p, X=X, y=np.array(["walk", "idle", "walk"]), lengths=np.array([4, 2, 3]),
             feature_names=np.array(["ax", "ay"]))
    s = read_sequences(p, require_labels=True)
    assert [x.shape for x in s.X] == [(4, 2), (2, 2), (3, 2)]
    assert s.X[1].tolist() == [[10, 11], [12, 13]]
    assert s.class_names == ("idle", "walk") and s.y.tolist() == [1, 0, 1]
    s = read_sequences(p, columns=Columns(features=("AY",)))
    assert s.feature_names == ("ay",) and s.X[2][:, 0].tolist() == [21, 23, 25]


def test_npz_class_names_travel_with_integer_labels(tmp_path):
    p = tmp_path / "c.npz"
    np.savez(p, X=np.zeros((2, 3, 1)), y=np.array([0, 1]), class_names=np.array(["off", "on"]))
    assert read_sequences(p).class_names == ("off", "on")


# -- bad input: one line each -------------------------------------------------------------
def _npz(tmp_path, **arrays):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    return p


def _truncated_npz(tmp_path):
    p = _npz(tmp_path, X=np.zeros((30, 7, 3)), y=np.zeros(30))
    p.write_bytes(p.read_bytes()[:300])
    return p


def _zero_link(tmp_path):
    p = tmp_path / "zero.csv"
    os.symlink("/dev/zero", p)
    return p


BAD = {
    "field_too_long": (lambda t: _csv(t, "ax,ay\n1," + "9" * 200_000 + "\n"),
                       "d.csv:2: a field is longer than 131072 characters (each field must be one value)"),
    "dev_zero_link": (_zero_link, "zero.csv is not a regular file (a device, FIFO or socket): give a .csv or "
                                  ".npz file"),
    "truncated_npz": (_truncated_npz, "bad.npz: not a readable .npz file (BadZipFile: File is not a zip file); "
                                      "write it again with numpy.savez"),
    "class_index_huge": (lambda t: _csv(t, "ax,label\n1,0\n2,1000000000\n"),
                         f"d.csv:3: label 1000000000 in column 'label' is not a class index 0..{MAX_CLASSES - 1}; "
                         "use class indexes 0..N-1 or class names"),
    "class_index_of_5000_digits": (lambda t: _csv(t, "ax,label\n1,0\n2," + "1" * 5000 + "\n"),
                                   "d.csv:3: label " + "1" * 40 + f"... in column 'label' is not a class index "
                                   f"0..{MAX_CLASSES - 1}; use class indexes 0..N-1 or class names"),
    "npz_class_index_huge": (lambda t: _npz(t, X=np.zeros((2, 3, 1)), y=np.array([0, 10 ** 9])),
                             f"bad.npz: y has class index 1000000000; class indexes must be 0..N-1 "
                             f"(at most {MAX_CLASSES} classes)"),
    "non_numeric": (lambda t: _csv(t, "ax,ay,label\n1,2,0\n1,oops,1\n"),
                    "d.csv:3: non-numeric value 'oops' in column 'ay' (features must be numbers; choose the "
                    "columns with [data] features)"),
    "field_count": (lambda t: _csv(t, "ax;ay;label\n1;2;0\n1;2\n"),
                    "d.csv:3: 2 fields, expected 3 (semicolon-separated, like the header)"),
    "no_label_column": (lambda t: _csv(t, "time,ax,Class\n0,1,a\n1,2,b\n"),
                        "d.csv: no label column 'label' (columns found: time, ax, Class); name it with "
                        "[data] label_column"),
    "nan_value": (lambda t: _csv(t, "ax,ay,label\n1,2,0\n1,nan,1\n"),
                  "d.csv:3: column 'ay' is nan (1 NaN/Inf value(s) in all); every feature value must be finite"),
    "mixed_labels": (lambda t: _csv(t, "ax,label\n1,walk\n2,run\n3,1\n"),
                     "d.csv:4: label '1' in column 'label' mixes numbers and class names; use one or the other"),
    "empty_label": (lambda t: _csv(t, "ax,label\n1,walk\n2,\n"),
                    "d.csv:3: empty label in column 'label'; every row needs its class"),
    "duplicate_columns": (lambda t: _csv(t, "ax,AX\n1,2\n"),
                          "d.csv:1: columns 'ax' and 'AX' have the same name (names are case-insensitive); "
                          "rename one"),
    "control_character_name": (lambda t: _csv(t, '"a\nx",ay\n1,2\n'),
                               "d.csv:2: the name of column 1, 'a\\nx', holds a control character; a column "
                               "name is one printable line"),
    "not_utf8": (lambda t: _csv(t, b"ax,ay\n1,\xff\n"),
                 "d.csv: not UTF-8 text (byte 8); save the file as UTF-8 CSV"),
    "only_time_columns": (lambda t: _csv(t, "time,ms\n1,2\n2,3\n"),
                          "d.csv: no feature columns (columns found: time, ms); name them with [data] features"),
    "npz_object_array": (lambda t: _npz(t, X=np.array([np.zeros((2, 1)), np.zeros((3, 1))], dtype=object)),
                         "bad.npz: cannot read without pickle (Object arrays cannot be loaded when "
                         "allow_pickle=False)"),
    "npz_bad_lengths": (lambda t: _npz(t, X=np.zeros((2, 3, 1)), lengths=np.array([3, 4])),
                        "bad.npz: lengths[1] is 4; each length must be 1..3 (X's steps)"),
    "npz_float_lengths": (lambda t: _npz(t, X=np.zeros((2, 3, 1)), lengths=np.array([3.0, 1.0])),
                          "bad.npz: lengths must be integers [2] (one per sequence of X), got float64 [2]"),
    "npz_missing_feature": (lambda t: _npz(t, X=np.zeros((2, 3, 2)), feature_names=np.array(["ax", "ay"])),
                            "bad.npz: no feature 'az' in feature_names (ax, ay)"),
}
COLUMNS = {"npz_missing_feature": Columns(features=("ax", "az"))}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_exact_line(case, tmp_path):
    make, message = BAD[case]
    path = make(tmp_path)
    with pytest.raises(DataError) as e:
        read_sequences(path, require_labels=case == "no_label_column", columns=COLUMNS.get(case))
    assert str(e.value) == f"{tmp_path}/{message}"
    assert "\n" not in str(e.value)


def test_csv_size_cap(tmp_path):
    p = tmp_path / "big.csv"
    with open(p, "wb") as f:
        f.truncate(MAX_CSV_BYTES + 1)  # sparse: no disk used
    with pytest.raises(DataError, match=rf"big.csv is {MAX_CSV_BYTES + 1} bytes, more than the {MAX_CSV_BYTES} a "
                                        "data file may have$"):
        read_sequences(p)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(DataError, match=r"data file .*nope.csv does not exist$"):
        read_sequences(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"unsupported data file type '.txt' \(use .npz or .csv\)$"):
        read_sequences(_csv(tmp_path, "1\n", "d.txt"))
    with pytest.raises(DataError, match=r"is a folder, not a data file$"):
        read_sequences(_dir(tmp_path))


def _dir(tmp_path):
    d = tmp_path / "folder.csv"
    d.mkdir()
    return d


def test_npz_that_inflates_past_the_cap_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import runtime.datafile as datafile

    monkeypatch.setattr(datafile, "MAX_NPZ_BYTES", 1 << 20)
    p = tmp_path / "bomb.npz"
    np.savez_compressed(p, X=np.zeros((1, 512, 1024), np.float32))  # 2 MiB of zeros in a few kB
    assert p.stat().st_size < 1 << 20
    with pytest.raises(DataError) as e:
        read_sequences(p)
    assert str(e.value) == f"{p}: its arrays take {512 * 1024 * 4 + 128} bytes uncompressed, more than the " \
                           f"{1 << 20} allowed"


def test_a_class_name_with_a_control_character_is_refused(tmp_path):
    p = _csv(tmp_path, 'ax,label\n1,walk\n2,"fast\nrun"\n')
    with pytest.raises(DataError) as e:
        read_sequences(p)
    assert str(e.value) == f"{p}:4: label 'fast\\nrun' in column 'label' holds a control character; class names " \
                           "are one printable line"


def test_without_labels_a_label_column_is_left_unread(tmp_path):
    p = _csv(tmp_path, "ax,label\n1,walk\n2,\n3,7\n")  # unreadable as labels, fine for streaming
    s = read_sequences(p, labels=False)
    assert s.y is None and s.feature_names == ("ax",) and _rows(s) == [[[1], [2], [3]]]
    n = tmp_path / "o.npz"
    np.savez(n, X=np.zeros((1, 2, 1)), y=np.array([1e9]))
    assert read_sequences(n, labels=False).y is None


# -- fuzz: any bytes as a data file end in Sequences or a DataError, nothing else ------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_CSV_PIECES = st.sampled_from(["ax", "AY", "label", "sequence", "time", ",", ";", "\t", "\n", "\r\n", '"', "1",
                               "-2.5", "0,5", "nan", "inf", "1e39", "walk", " ", "\ufeff", "", "\x00", "é"])


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.lists(_CSV_PIECES, max_size=60).map("".join).map(str.encode), st.binary(max_size=300)))
def test_fuzz_any_csv_bytes_read_or_refused_in_one_line(tmp_path, data):
    p = tmp_path / "f.csv"
    p.write_bytes(data)
    for labels in (True, False):
        try:
            s = read_sequences(p, labels=labels, columns=Columns())
        except DataError as e:
            assert "\n" not in str(e) and "\r" not in str(e)
        else:
            assert all(x.dtype == np.float32 and x.shape[1] == s.features and np.isfinite(x).all() for x in s.X)
            assert all(n.isprintable() and n.strip() == n and n for n in s.feature_names)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 1000), st.binary(min_size=1, max_size=8))
def test_fuzz_damaged_npz_is_refused_in_one_line(tmp_path, cut, junk):
    p = tmp_path / "f.npz"
    np.savez(p, X=np.ones((3, 4, 2), np.float32), y=np.array([0, 1, 0]), lengths=np.array([4, 2, 3]))
    raw = p.read_bytes()
    p.write_bytes(raw[:cut] + junk + raw[cut + len(junk):])
    try:
        read_sequences(p, require_labels=True)
    except DataError as e:
        assert "\n" not in str(e) and "\r" not in str(e)
