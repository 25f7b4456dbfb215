"""[BOX]/[SEG] pairing (model/prompt_tokens.py) against a plain statement of the rule, padding, and state gathering."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparrow.model.prompt_tokens import PromptPairs, gather_states, pair_prompt_tokens, teacher_forced_pairs

BOX, SEG, PAD = 7, 8, 0
SETTINGS = settings(
    max_examples=200, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


def reference_pairs(tokens: list[int]) -> tuple[list[int | None], list[int], int]:
    """Each [SEG] takes the nearest [BOX] before it unless a [SEG] or a later [BOX] lies between; every [BOX]
    that no [SEG] takes is an orphan."""
    boxes, segs, taken = [], [], set()
    for j, tok in enumerate(tokens):
        if tok != SEG:
            continue
        partner = None
        for i in range(j - 1, -1, -1):
            if tokens[i] == SEG:
                break
            if tokens[i] == BOX:
                partner = i
                break
        boxes.append(partner)
        segs.append(j)
        if partner is not None:
            taken.add(partner)
    orphans = sum(1 for i, tok in enumerate(tokens) if tok == BOX and i not in taken)
    return boxes, segs, orphans


tokens = st.lists(st.sampled_from([1, 2, BOX, SEG]), max_size=16)


@SETTINGS
@given(tokens)
def test_pairing_equals_the_rule(seq: list[int]) -> None:
    p = pair_prompt_tokens(seq, BOX, SEG)
    assert (p.box_positions, p.seg_positions, p.orphan_boxes) == reference_pairs(seq)
    assert len(p) == seq.count(SEG)
    assert pair_prompt_tokens(torch.tensor(seq, dtype=torch.long), BOX, SEG) == p  # tensors too


def test_pairing_by_hand() -> None:
    p = pair_prompt_tokens([BOX, SEG, SEG, BOX, BOX, 3, SEG, BOX], BOX, SEG)
    assert p == PromptPairs(box_positions=[0, None, 4], seg_positions=[1, 2, 6], orphan_boxes=2)
    assert pair_prompt_tokens([], BOX, SEG) == PromptPairs([], [], 0)
    assert pair_prompt_tokens([BOX], BOX, SEG).orphan_boxes == 1


@SETTINGS
@given(st.lists(tokens, min_size=1, max_size=4), st.booleans(), st.sampled_from([(BOX, SEG), (0, 1), (1, 0)]))
def test_teacher_forced_pairs_index_states_for_either_padding(rows: list[list[int]], left: bool, ids_of) -> None:
    """Position j reads the state whose next token is the prompt token; pads (even if their id is [SEG]) never count,
    whatever (non-negative) ids the two prompt tokens have."""
    box_id, seg_id = ids_of
    swap = {BOX: box_id, SEG: seg_id, 1: 2 if 1 in ids_of else 1, 2: 3 if 2 in ids_of else 2}
    length = max(len(r) for r in rows) + 1
    ids = torch.full((len(rows), length), seg_id)  # padding with the [SEG] id: only the mask may hide it
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    offsets = []
    for b, row in enumerate(rows):
        full = [swap[1], *(swap[t] for t in row)]  # a first token, then the answer tokens
        start = length - len(full) if left else 0
        ids[b, start : start + len(full)] = torch.tensor(full)
        mask[b, start : start + len(full)] = 1
        offsets.append(start)
    got = teacher_forced_pairs(ids, mask, box_id, seg_id)
    for b, row in enumerate(rows):
        boxes, segs, orphans = reference_pairs(row)
        shift = offsets[b]  # state j of the unpadded row sits at j + shift; its next token is row[j]
        assert got[b].seg_positions == [s + shift for s in segs]
        assert got[b].box_positions == [None if x is None else x + shift for x in boxes]
        assert got[b].orphan_boxes == orphans
        for pos in got[b].seg_positions:
            assert int(ids[b, pos + 1]) == seg_id and int(mask[b, pos + 1]) == 1


def test_gather_states_zero_for_missing_positions() -> None:
    states = torch.arange(12, dtype=torch.float32).reshape(4, 3) + 1
    picked, present = gather_states(states, [2, None, 0, 3])
    assert present.tolist() == [True, False, True, True]
    torch.testing.assert_close(picked, torch.stack([states[2], torch.zeros(3), states[0], states[3]]))
    empty, none = gather_states(states, [])
    assert empty.shape == (0, 3) and none.shape == (0,) and none.dtype == torch.bool
    one, flags = gather_states(states[:1], [None, 0, None])  # a missing position needs no second state
    torch.testing.assert_close(one, torch.stack([torch.zeros(3), states[0], torch.zeros(3)]))
    assert flags.tolist() == [False, True, False]
    grad = states.clone().requires_grad_(True)
    gather_states(grad, [1, None])[0].sum().backward()
    assert grad.grad[:, 0].tolist() == [0.0, 1.0, 0.0, 0.0]  # the None row sends no gradient to state 0
