"""LocalAgreement-2 over token ids."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.streaming.local_agreement import LocalAgreement, common_prefix_length

tokens = st.lists(st.integers(0, 5), max_size=12)


def test_the_first_hypothesis_commits_nothing():
    agreement = LocalAgreement()
    assert agreement.agree([1, 2, 3]) == 0
    assert agreement.agree([1, 2, 4]) == 2
    assert agreement.agree([1, 2, 4, 5]) == 3


def test_after_a_commit_the_rest_is_compared():
    agreement = LocalAgreement()
    agreement.agree([1, 2, 3, 4])
    assert agreement.agree([1, 2, 3, 9]) == 3
    agreement.committed(3)  # the next hypothesis continues after [1, 2, 3]
    assert agreement.agree([9, 7]) == 1
    agreement.reset()
    assert agreement.agree([9, 7]) == 0


@given(tokens, tokens)
def test_agreement_is_the_longest_common_prefix(a, b):
    agreement = LocalAgreement()
    agreement.agree(a)
    n = agreement.agree(b)
    assert n == common_prefix_length(a, b) == common_prefix_length(b, a)
    assert a[:n] == b[:n]
    assert n == min(len(a), len(b)) or a[n] != b[n]
