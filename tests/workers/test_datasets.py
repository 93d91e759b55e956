import json

import pytest

from plugins.base import Example
from tests.tiny import tiny_csv
from workers.datasets import DataError, parse_task_data, split_examples


def test_csv_and_jsonl_parse_to_the_same_examples():
    from_csv = parse_task_data(b"text,label\nhello world,a\n  spaced  ,b\n,a\n", "data.csv")
    rows = [
        {"text": "hello world", "label": "a"},
        {"text": "  spaced  ", "label": "b"},
        {"text": "", "label": "a"},
    ]
    from_jsonl = parse_task_data("\n".join(json.dumps(r) for r in rows).encode(), "data.jsonl")
    assert from_csv == from_jsonl == [Example("hello world", "a"), Example("spaced", "b")]


def test_unlabelled_rows_are_allowed_by_the_parser():
    assert parse_task_data(b"text\nsome log line\n", "logs.csv") == [Example("some log line", None)]


@pytest.mark.parametrize(
    ("raw", "name", "message"),
    [
        (b"review,stars\ngood,5\n", "d.csv", "needs a 'text' column .*found: review, stars"),
        (b'{"text": "a", "label": "x"}\n{oops\n', "d.jsonl", "Line 2: not valid JSON"),
        (b'["a", "b"]\n', "d.jsonl", "Line 1: expected an object"),
        (b'{"text": 5, "label": "x"}\n', "d.jsonl", "Line 1: 'text' must be a string"),
        (b"text,label\n\xff\xfe bad,x\n", "d.csv", "not UTF-8"),
        (b"text,label\n", "d.csv", "no examples"),
        (b"text,label\na,b\n", "d.xlsx", "Upload a .csv or .jsonl"),
    ],
)
def test_bad_files_get_a_message_that_says_what_to_fix(raw, name, message):
    with pytest.raises(DataError, match=message):
        parse_task_data(raw, name)


def test_split_is_deterministic_stratified_and_disjoint():
    examples = parse_task_data(tiny_csv(per_label=20), "tiny.csv")
    first = split_examples(examples)
    again = split_examples(list(reversed(examples)))
    assert [e.text for e in first.eval] == [e.text for e in again.eval]
    assert not {e.text for e in first.eval} & {e.text for e in first.train}
    assert first.labels == ["cooking", "sports", "weather"]
    assert {e.label for e in first.eval} == set(first.labels)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("a", "x")] * 1 + [("b", "x"), ("c", "x"), ("d", "x")], "at least two labels; found only x"),
        ([(f"t{i}", "x") for i in range(5)] + [("u", "y"), ("v", "y")], "too few: 'y' \\(2\\)"),
        (
            [(f"t{i}", "x") for i in range(5)] + [(f"u{i}", None) for i in range(5)],
            "5 examples have no label",
        ),
    ],
)
def test_split_refuses_data_it_cannot_hold_out(rows, message):
    with pytest.raises(DataError, match=message):
        split_examples([Example(t, label) for t, label in rows])
