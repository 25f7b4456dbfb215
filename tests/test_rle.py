"""COCO RLE (data/rle.py): round trips, uncompressed counts, the string-count validator and tight boxes, against
plain definitions (column-major runs starting with background; box = pixel edges of the occupied rows/columns)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from sparrow.data.rle import _string_counts, decode_rle, encode_mask, mask_to_box, rle_area, rle_box, validate_rle
from sparrow.errors import SparrowError

SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


def plain_runs(mask: np.ndarray) -> list[int]:
    """Run lengths of the column-major pixel order, the first run counting background (possibly 0)."""
    flat = mask.T.reshape(-1).astype(int).tolist()
    runs, current, length = [], 0, 0
    for v in flat:
        if v == current:
            length += 1
        else:
            runs.append(length)
            current, length = v, 1
    runs.append(length)
    return runs


def plain_decode(runs: list[int], h: int, w: int) -> np.ndarray:
    flat = np.concatenate([np.full(n, i % 2, dtype=bool) for i, n in enumerate(runs)]) if runs else np.zeros(0, bool)
    return flat.reshape(w, h).T


def plain_box(mask: np.ndarray) -> list[float] | None:
    rows = [y for y in range(mask.shape[0]) if mask[y].any()]
    cols = [x for x in range(mask.shape[1]) if mask[:, x].any()]
    if not rows:
        return None
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


masks = st.tuples(
    st.integers(1, 24), st.integers(1, 24), st.integers(0, 2**31 - 1), st.sampled_from([0.0, 0.02, 0.3, 0.9, 1.0])
).map(lambda p: np.random.default_rng(p[2]).random((p[0], p[1])) < p[3])


def test_mask_to_box_of_single_pixels_and_edges() -> None:
    m = np.zeros((5, 7), bool)
    assert mask_to_box(m) is None
    m[2, 3] = True
    assert mask_to_box(m) == [3.0, 2.0, 4.0, 3.0]  # one pixel: a box one pixel wide and high
    m[4, 6] = True  # the frame's last pixel: x1, y1 are the frame's width and height
    assert mask_to_box(m) == [3.0, 2.0, 7.0, 5.0]
    assert mask_to_box(np.ones((5, 7), bool)) == [0.0, 0.0, 7.0, 5.0]


def test_mask_to_box_of_every_3x3_mask() -> None:
    for code in range(2**9):
        m = ((code >> np.arange(9)) & 1).astype(bool).reshape(3, 3)
        assert mask_to_box(m) == plain_box(m), m.astype(int)


@SETTINGS
@given(masks)
def test_mask_to_box_matches_the_plain_box(mask: np.ndarray) -> None:
    assert mask_to_box(mask) == plain_box(mask)


@SETTINGS
@given(masks)
def test_compressed_round_trip_and_string_counts(mask: np.ndarray) -> None:
    rle = encode_mask(mask)
    assert rle["size"] == list(mask.shape) and isinstance(rle["counts"], str)
    assert _string_counts(rle["counts"]).tolist() == plain_runs(mask)
    np.testing.assert_array_equal(decode_rle(rle, expected_size=mask.shape), mask)
    assert mask_utils.area(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))) == mask.sum()


@SETTINGS
@given(masks)
def test_uncompressed_counts_decode_to_the_plain_runs(mask: np.ndarray) -> None:
    runs = plain_runs(mask)
    rle = {"size": list(mask.shape), "counts": runs}
    np.testing.assert_array_equal(plain_decode(runs, *mask.shape), mask)  # the reference itself
    np.testing.assert_array_equal(decode_rle(rle), mask)
    assert encode_mask(decode_rle(rle)) == encode_mask(mask)


def test_uncompressed_counts_by_hand() -> None:
    # 2 x 3, column-major: (0,0) (1,0) (0,1) (1,1) (0,2) (1,2) = 0 1 1 0 0 1
    got = decode_rle({"size": [2, 3], "counts": [1, 2, 2, 1]})
    np.testing.assert_array_equal(got, np.array([[0, 1, 0], [1, 0, 1]], bool))
    np.testing.assert_array_equal(decode_rle({"size": [2, 3], "counts": [0, 6]}), np.ones((2, 3), bool))
    np.testing.assert_array_equal(decode_rle({"size": [2, 3], "counts": [6]}), np.zeros((2, 3), bool))


@pytest.mark.parametrize(
    "rle, message",
    [
        ({"size": [2, 3]}, "need 'size' and 'counts'"),
        ([1, 2], "need 'size' and 'counts'"),
        ({"size": [2], "counts": [6]}, "malformed RLE size"),
        ({"size": [2, -3], "counts": [6]}, "malformed RLE size"),
        ({"size": [2, 3.0], "counts": [6]}, "malformed RLE size"),
        ({"size": [2, 3], "counts": [1, 2, 2]}, "do not cover"),  # 5 of 6 pixels
        ({"size": [2, 3], "counts": [4, 3]}, "do not cover"),  # 7 of 6
        ({"size": [2, 3], "counts": [7, -1]}, "do not cover"),  # a negative run that sums right
        ({"size": [2, 3], "counts": [1.0, 5.0]}, "counts of type list"),
        ({"size": [2, 3], "counts": b"06"}, "counts of type bytes"),
        ({"size": [2, 3], "counts": "0"}, "do not cover"),
        ({"size": [2, 3], "counts": "6\x7f"}, "do not cover"),  # a character outside the alphabet
        ({"size": [2, 3], "counts": "\\"}, "do not cover"),  # 0x2c: "more follows", then the string ends
        ({"size": [1, 6], "counts": "6p"}, "do not cover"),  # 'p' = 48 + 64: one past the alphabet
        ({"size": [1, 15], "counts": "\u00e9"}, "do not cover"),  # not ASCII (was a UnicodeEncodeError)
        ({"size": [1, 6], "counts": "6" + "P" * 12 + "0"}, "do not cover"),  # a value of 13 groups (65 bits)
        (["size", "counts"], "need 'size' and 'counts'"),  # holds both names, yet is no mapping
    ],
)
def test_malformed_rles_are_one_line_errors_naming_the_source(rle, message) -> None:
    with pytest.raises(SparrowError, match=message) as err:
        decode_rle(rle, source="masks.json")
    assert "masks.json" in str(err.value) and "\n" not in str(err.value)


def test_size_must_match_the_frames() -> None:
    rle = encode_mask(np.zeros((4, 5), bool))
    assert decode_rle(rle, expected_size=(4, 5)).shape == (4, 5)
    with pytest.raises(SparrowError, match=r"^m.json: RLE of size \[4, 5\] where the frames are \[5, 4\]$"):
        decode_rle(rle, expected_size=(5, 4), source="m.json")
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        encode_mask(np.zeros((2, 4, 5), bool))


def test_string_counts_decode_long_runs_and_differences() -> None:
    """Values past the third are differences to the value two places earlier; long runs take several groups."""
    mask = np.zeros((300, 200), bool)
    mask[10:250, 5:7] = True  # runs of 240 pixels, far from the previous ones
    mask[0, 150:] = True  # 50 one-pixel runs
    rle = encode_mask(mask)
    assert _string_counts(rle["counts"]).tolist() == plain_runs(mask)
    assert _string_counts("") is None and _string_counts("0" * 13 + "\\") is None
    twelve = _string_counts("6" + "P" * 11 + "0")  # 0 written in 12 groups (60 bits): the longest allowed value
    assert twelve.tolist() == [6, 0] and twelve.dtype == np.int64
    assert _string_counts(encode_mask(mask)["counts"]).dtype == np.int64
    np.testing.assert_array_equal(decode_rle({"size": [1, 6], "counts": "6" + "P" * 11 + "0"}), np.zeros((1, 6), bool))


def test_empty_frames_and_the_decoded_type() -> None:
    """A zero-sized frame decodes from empty counts; every decode is boolean."""
    assert decode_rle({"size": [0, 3], "counts": []}).shape == (0, 3)
    for rle in ({"size": [2, 3], "counts": [1, 2, 2, 1]}, encode_mask(np.eye(3, dtype=bool))):
        assert decode_rle(rle).dtype == bool


def test_malformed_message_quotes_the_start_of_the_rle() -> None:
    rle = {"size": [2, 3], "note": "x" * 200}
    with pytest.raises(SparrowError) as err:
        decode_rle(rle)
    assert str(err.value).endswith(str(rle)[:80])


@SETTINGS
@given(masks)
def test_area_and_box_without_decoding(mask: np.ndarray) -> None:
    """rle_area / rle_box read the RLE as it is and agree with the decoded mask, for both count forms."""
    for rle in (encode_mask(mask), {"size": list(mask.shape), "counts": plain_runs(mask)}):
        assert rle_area(rle, expected_size=mask.shape) == int(mask.sum())
        assert rle_box(rle) == plain_box(mask)


def test_validate_names_the_source_and_keeps_the_counts() -> None:
    mask = np.eye(4, dtype=bool)
    rle = encode_mask(mask)
    coded = validate_rle(rle)
    assert coded["size"] == [4, 4] and mask_utils.area(coded) == 4
    with pytest.raises(SparrowError, match=r"^a.json: RLE of size \[4, 4\] where the frames are \[4, 5\]$"):
        rle_area(rle, expected_size=(4, 5), source="a.json")
    with pytest.raises(SparrowError, match=r"^b.json: RLE counts do not cover"):
        rle_box({"size": [2, 2], "counts": [1, 2]}, source="b.json")
