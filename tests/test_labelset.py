"""Label sets as data: the built-in ones, a user's file, and one-line errors for malformed files."""

from __future__ import annotations

import re

import pytest
import tomllib

from dsdi.errors import InputError
from dsdi.labels.labelset import (
    LADI_V1,
    LabelSet,
    builtin_labelset_names,
    labelset_for_outputs,
    load_labelset,
    read_feature_numbers,
)

# The published names and order of LADI v2's label sets (its label CSVs) and of the classifiers' id2label.
LADI_V2 = ["bridges_any", "bridges_damage", "buildings_affected", "buildings_any", "buildings_destroyed",
           "buildings_major", "buildings_minor", "debris_any", "flooding_any", "flooding_structures", "roads_any",
           "roads_damage", "trees_any", "trees_damage", "water_any"]
LADI_V2A = ["bridges_any", "buildings_any", "buildings_affected_or_greater", "buildings_minor_or_greater",
            "debris_any", "flooding_any", "flooding_structures", "roads_any", "roads_damage", "trees_any",
            "trees_damage", "water_any"]


def test_every_builtin_label_set_loads_with_its_published_classes():
    assert builtin_labelset_names() == ("ladi-v1", "ladi-v1-damage", "ladi-v1-infrastructure", "ladi-v2",
                                        "ladi-v2a")
    assert list(load_labelset("ladi-v2").class_names) == LADI_V2
    assert list(load_labelset("ladi-v2a").class_names) == LADI_V2A
    assert load_labelset("ladi-v1-damage").class_names == ("flood", "rubble", "misc_damage")
    assert load_labelset("ladi-v1-infrastructure").class_names == ("building", "road")
    for name in builtin_labelset_names():
        labelset = load_labelset(name)
        assert labelset.name == name and labelset.features
        assert LabelSet.from_dict(tomllib.loads(labelset.to_toml()), "round trip") == labelset
        assert LabelSet.from_dict(labelset.to_dict(), "dict") == labelset


def test_ladi_v1_is_the_default_with_32_numbered_features_and_5_none_classes():
    assert load_labelset(None) == LADI_V1 == load_labelset("ladi-v1")
    assert len(LADI_V1.class_names) == 37 and LADI_V1.features == LADI_V1.class_names[:32]
    assert LADI_V1.none_classes == LADI_V1.class_names[32:] and sum(LADI_V1.none_mask) == 5
    assert [LADI_V1.feature_numbers[f] for f in LADI_V1.features] == list(range(1, 33))
    assert LADI_V1.topics()["damage (misc)"] == 1 and LADI_V1.counts[0] == 24009
    v2a = load_labelset("ladi-v2a")
    assert v2a.feature_numbers is None and v2a.counts is None and v2a.none_classes == ()
    assert v2a.topics()["roads_any"] == "roads_any"


def test_a_users_label_set_file_loads_like_a_builtin(tmp_path):
    path = tmp_path / "wildfire.toml"
    path.write_text('name = "wildfire"\nclasses = [\n  { name = "smoke", category = "fire" },\n'
                    '  { name = "burn_scar", category = "fire", count = 4 },\n'
                    '  { name = "fire: none", category = "fire", role = "none" },\n]\n'.replace(
                        '"smoke", category = "fire" }', '"smoke", category = "fire", count = 9 }').replace(
                        'role = "none" }', 'role = "none", count = 1 }'))
    labelset = load_labelset(path)
    assert labelset.name == "wildfire" and labelset.features == ("smoke", "burn_scar")
    assert labelset.none_mask == (False, False, True) and labelset.counts == (9, 4, 1)
    assert labelset.topics() == {"smoke": "smoke", "burn_scar": "burn_scar"}


MALFORMED = {
    "not toml": ("name = \n", "not valid TOML"),
    "no name": ('classes = [{ name = "a", category = "c" }]\n', "needs a name"),
    "no classes": ('name = "x"\n', "needs a non-empty list 'classes'"),
    "unknown key": ('name = "x"\nlabels = 1\nclasses = [{ name = "a", category = "c" }]\n',
                    "unknown keys \\['labels'\\]"),
    "class without category": ('name = "x"\nclasses = [{ name = "a" }]\n', "class 1 needs a non-empty text category"),
    "bad role": ('name = "x"\nclasses = [{ name = "a", category = "c", role = "ranked" }]\n',
                 "role 'ranked' is not one of feature, none, other"),
    "twice": ('name = "x"\nclasses = [{ name = "a", category = "c" }, { name = "a", category = "c" }]\n',
              "class 'a' is listed twice"),
    "no feature": ('name = "x"\nclasses = [{ name = "a", category = "c", role = "none" }]\n',
                   "no class has role = \"feature\""),
    "some numbers": ('name = "x"\nclasses = [{ name = "a", category = "c", number = 1 }, '
                     '{ name = "b", category = "c" }]\n', "features \\['b'\\] have no number while others do"),
    "number twice": ('name = "x"\nclasses = [{ name = "a", category = "c", number = 1 }, '
                     '{ name = "b", category = "c", number = 1 }]\n', "feature numbers \\[1\\] are used twice"),
    "bad count": ('name = "x"\nclasses = [{ name = "a", category = "c", count = -3 }]\n',
                  "count -3 is not a whole number"),
    "some counts": ('name = "x"\nclasses = [{ name = "a", category = "c", count = 3 }, '
                    '{ name = "b", category = "c" }]\n', "some classes have a count and some do not"),
    "spaced topic": ('name = "x"\nclasses = [{ name = "a b", category = "c" }]\n', "has a space"),
    "number on none": ('name = "x"\nclasses = [{ name = "a", category = "c" }, '
                       '{ name = "n", category = "c", role = "none", number = 2 }]\n', "only features have a"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_label_set_file_is_one_line_naming_the_file(tmp_path, case):
    text, message = MALFORMED[case]
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=f"--labelset {re.escape(str(path))}: .*{message}") as raised:
        load_labelset(path)
    assert "\n" not in str(raised.value)


def test_an_unknown_name_lists_the_builtins(tmp_path):
    with pytest.raises(InputError, match="no built-in label set has this name; choose one of ladi-v1, "):
        load_labelset("ladi-v3")
    with pytest.raises(InputError, match="nope.toml: no such file"):
        load_labelset(tmp_path / "nope.toml")


def test_the_labels_of_a_model_that_names_its_outputs():
    assert labelset_for_outputs(LADI_V2A, "MITLL/LADI-v2-classifier-small").name == "ladi-v2a"
    own = labelset_for_outputs(["hail_damage", "roof"], "mine")
    assert own.name == "mine" and own.features == ("hail_damage", "roof") and own.categories == ("hail", "roof")


def test_feature_numbers_from_a_users_file(tmp_path, cli):
    user = tmp_path / "fnums.csv"
    user.write_text("feature,number\n" + "".join(f'"{f}",{100 + i}\n' for i, f in enumerate(LADI_V1.features)))
    renumbered = LADI_V1.with_feature_numbers(read_feature_numbers(user, LADI_V1))
    assert renumbered.topics()["damage (misc)"] == 100 and renumbered.class_names == LADI_V1.class_names
    cases = {'feature,number\n"damage (misc)",1\n': "unknown features \\[\\], missing features",
             'feature,number\n"damage (misc)",1\n"flooding",x\n': "line 3: feature number 'x' is not an integer",
             'feature,number\n"damage (misc)",1\n"flooding",1\n': "line 3: feature number 1 is used twice",
             "fnum\n1\n": "needs columns 'feature' and 'number'"}
    for text, message in cases.items():
        user.write_text(text)
        with pytest.raises(InputError, match=f"--feature-numbers {re.escape(str(user))}.*{message}"):
            read_feature_numbers(user, LADI_V1)
    with pytest.raises(InputError, match="nope.csv: no such file"):
        read_feature_numbers(tmp_path / "nope.csv", LADI_V1)
