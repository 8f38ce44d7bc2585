import pytest

from petalnet.classes import CLASSES, NUM_CLASSES, class_index, class_name
from petalnet.errors import PetalnetError


def test_competition_order():
    assert NUM_CLASSES == 104
    assert CLASSES[0] == "pink primrose" and CLASSES[103] == "wild rose"
    # the 12 classes petals-mini uses, as its README lists them
    expected = {5: "tiger lily", 11: "colt's foot", 22: "fritillary", 47: "buttercup", 48: "daisy",
                49: "common dandelion", 51: "wild pansy", 53: "sunflower", 67: "iris", 68: "windflower",
                73: "rose", 102: "common tulip"}
    assert {i: class_name(i) for i in expected} == expected
    assert len(set(CLASSES)) == 104


def test_lookup_by_name_is_forgiving():
    assert class_index("daisy") == 48
    assert class_index("Common_Tulip") == 102
    assert class_index("cyclamen ") == 87 and class_index("hippeastrum") == 90
    for i, name in enumerate(CLASSES):
        assert class_index(name) == i


def test_bad_lookups():
    with pytest.raises(PetalnetError, match="unknown flower class"):
        class_index("dandelionz")
    with pytest.raises(PetalnetError, match="outside 0..103"):
        class_name(104)
