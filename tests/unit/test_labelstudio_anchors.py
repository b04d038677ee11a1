"""The task-id anchors that bound the Label Studio backend's look-ups (labelstudio/anchors.py)."""

from __future__ import annotations

from stream_router.labelstudio.anchors import IdAnchors


def test_the_bound_is_the_greatest_id_anchored_at_or_before_the_time() -> None:
    anchors = IdAnchors()
    assert anchors.before(1e12) is None
    for seen_s, task_id in [(100.0, 10), (110.0, 20), (120.0, 30)]:
        anchors.saw(seen_s, task_id)
    assert anchors.before(99.9) is None
    assert anchors.before(100.0) == 10
    assert anchors.before(119.9) == 20
    assert anchors.before(1e12) == 30


def test_an_anchor_another_says_more_than_is_dropped() -> None:
    anchors = IdAnchors()
    anchors.saw(100.0, 10)
    anchors.saw(110.0, 8)  # later, smaller: (100, 10) says more
    anchors.saw(105.0, 12)  # out of order (two answers read at once): kept between
    assert len(anchors) == 2
    assert anchors.before(104.0) == 10
    assert anchors.before(110.0) == 12
    anchors.saw(90.0, 15)  # earlier and greater than both: the only one left
    assert len(anchors) == 1
    assert anchors.before(89.0) is None
    assert anchors.before(200.0) == 15


def test_anchors_closer_than_the_spacing_keep_the_earlier_one() -> None:
    anchors = IdAnchors(spacing_s=1.0)
    anchors.saw(100.0, 10)
    anchors.saw(100.5, 11)
    assert anchors.before(100.5) == 10  # less tight, never wrong
    anchors.saw(101.0, 12)
    assert anchors.before(101.0) == 12


def test_past_the_limit_the_older_half_thins_out_and_the_oldest_stays() -> None:
    anchors = IdAnchors(spacing_s=0.0, kept=8)
    for i in range(9):
        anchors.saw(float(i), i + 1)
    assert len(anchors) <= 8
    assert anchors.before(0.0) == 1  # the oldest anchor: a request recorded long ago
    assert anchors.before(8.0) == 9
    for time_s in range(9):  # every bound still at or below the true one
        bound = anchors.before(float(time_s))
        assert bound is not None
        assert bound <= time_s + 1
