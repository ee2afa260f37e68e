"""The class schema against the paper's Table 1 (names and image counts typed from the paper) and the shipped data
tables."""

import re

import pytest

from dsdi.errors import InputError
from dsdi.labels import schema

TABLE1 = [
    ("damage (misc)", 24009), ("flooding / water damage", 33120), ("landslide", 2237), ("road washout", 3613),
    ("rubble / debris", 18186), ("smoke / fire", 1756), ("dirt", 11866), ("grass", 19623), ("lava", 67),
    ("rocks", 1067), ("sand", 2565), ("shrubs", 13513), ("snow/ice", 116), ("trees", 21183), ("bridge", 3132),
    ("building", 15133), ("dam / levee", 616), ("pipes", 554), ("utility or power lines / electric towers", 10612),
    ("railway", 742), ("wireless / radio communication towers", 1136), ("water tower", 749), ("road", 16333),
    ("aircraft", 201), ("boat", 2500), ("car", 13846), ("truck", 7579), ("flooding", 4077), ("lake / pond", 5879),
    ("ocean", 3029), ("puddle", 2386), ("river / stream", 7362), ("damage: none", 98412),
    ("environment: none", 6748), ("infrastructure: none", 11814), ("vehicle: none", 15420), ("water: none", 13902),
]


def test_classes_follow_table1_order_and_counts():
    assert list(zip(schema.CLASSES, schema.CLASS_COUNTS, strict=True)) == TABLE1


def test_features_and_categories():
    assert schema.FEATURES == schema.CLASSES[:32]
    assert schema.NONE_CLASSES == schema.CLASSES[32:]
    per_category = {c: sum(1 for f in schema.FEATURES if schema.category_of(f) == c) for c in schema.CATEGORIES}
    assert per_category == {"damage": 6, "environment": 8, "infrastructure": 9, "vehicles": 4, "water": 5}
    assert sum(schema.NONE_CLASS_MASK) == 5 and not any(schema.NONE_CLASS_MASK[:32])


def test_token_map_covers_every_class_and_normalises_spelling():
    token_map = schema.load_token_map()
    assert set(token_map.values()) == set(schema.CLASSES)
    assert token_map[schema.normalise_token("damage:flood/water")] == "flooding / water damage"
    assert token_map[schema.normalise_token("Water: Lake / Pond")] == "lake / pond"
    assert token_map[schema.normalise_token("infrastructure:dam_levee")] == "dam / levee"


def test_shipped_answer_tokens_keep_raw_spellings_and_agree_with_the_token_map():
    rows = schema.shipped_answer_tokens()
    assert rows[0] == ("damage:misc", "damage (misc)")
    assert {class_name for _, class_name in rows} == set(schema.CLASSES)
    token_map = schema.load_token_map()
    assert all(token_map[schema.normalise_token(token)] == class_name for token, class_name in rows)


def test_user_token_map_extends_and_is_checked(tmp_path):
    extra = tmp_path / "tokens.csv"
    extra.write_text("token,class\nvehicles:helicopter,aircraft\n")
    assert schema.load_token_map(extra)["vehicles:helicopter"] == "aircraft"
    extra.write_text("token,class\nvehicles:helicopter,chopper\n")
    with pytest.raises(InputError, match=f"--token-map {re.escape(str(extra))}, line 2: class 'chopper' is not one of"):
        schema.load_token_map(extra)
    extra.write_text("# a comment\ntoken,klass\nvehicles:helicopter,aircraft\n")
    with pytest.raises(InputError, match="line 3: needs columns 'token' and 'class'"):
        schema.load_token_map(extra)
    with pytest.raises(InputError, match="nope.csv: cannot read it: no such file"):
        schema.load_token_map(tmp_path / "nope.csv")
