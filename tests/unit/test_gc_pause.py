"""Loading raises the youngest generation's collection threshold and gives the user's
thresholds back afterwards, also when the load fails (edgeseq/gc_pause.py)."""
import gc

import pytest

from edgeseq.gc_pause import YOUNG_THRESHOLD, fewer_collections


@pytest.fixture
def thresholds():
    old = gc.get_threshold()
    yield
    gc.set_threshold(*old)


def test_threshold_raised_inside_and_restored_after_an_error(thresholds):
    gc.set_threshold(700, 11, 12)
    with pytest.raises(RuntimeError):
        with fewer_collections():
            assert gc.get_threshold() == (YOUNG_THRESHOLD, 11, 12)
            raise RuntimeError("load failed")
    assert gc.get_threshold() == (700, 11, 12)


def test_a_higher_user_threshold_is_kept(thresholds):
    gc.set_threshold(5 * YOUNG_THRESHOLD, 10, 10)
    with fewer_collections():
        assert gc.get_threshold()[0] == 5 * YOUNG_THRESHOLD
    assert gc.get_threshold() == (5 * YOUNG_THRESHOLD, 10, 10)


def test_collection_turned_off_stays_off(thresholds):
    gc.set_threshold(0)
    with fewer_collections():
        assert gc.get_threshold()[0] == 0


def test_what_a_quiet_block_built_goes_to_the_oldest_generation(thresholds):
    gc.collect()
    with fewer_collections():
        kept = [[k] for k in range(5000)]
    assert gc.get_count()[0] < 1000          # not waiting in the youngest generation
    assert any(o is kept for o in gc.get_objects(generation=2))


def test_objects_the_process_froze_stay_frozen(thresholds):
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with fewer_collections():
            pass
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
