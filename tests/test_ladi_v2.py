"""`dsdi labels` on LADI v2 as distributed: the download's label files (comma-separated v2/v2a files, LADI v1's
tab-separated subsets) and the hosted `datasets` save_to_disk folder, written here in the published layouts (Arrow
stream shards written by pyarrow, real JPEG and PNG bytes made with PIL), checked through the real CLI."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from dsdi.labels.labelset import load_labelset
from dsdi.train.data import read_labels_csv

V2A = load_labelset("ladi-v2a").class_names
ONE_LINE = {"expect": 2, "env": {"COLUMNS": "2000"}, "terminal_width": 2000}
"""cli() options for an error that must be one line of exit status 2."""


def write_label_file(path: Path, rows: list[tuple[str, list[str]]], columns, sep: str = ",") -> Path:
    """A LADI v2 label file: local_path, url, then ``columns``; a row is (local_path, label texts)."""
    lines = [sep.join(["local_path", "url", *columns])]
    lines += [sep.join([local, f"https://ladi.s3.amazonaws.com/{local}", *values]) for local, values in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_written(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"image_id": str, "split": str}, keep_default_na=False)


def assert_trains_as_read(path: Path, labels: pd.DataFrame, labelset_name: str) -> None:
    """Training reads the written CSV (``read_labels_csv`` with the label set) as pandas does."""
    trained = read_labels_csv(path, load_labelset(labelset_name))
    assert trained[["image_id", "split"]].equals(labels[["image_id", "split"]])
    columns = list(load_labelset(labelset_name).class_names)
    np.testing.assert_array_equal(trained[columns].to_numpy(), labels[columns].to_numpy(dtype=np.float32))


def assert_one_line_error(result, *fragments: str) -> None:
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error:"), result.output
    for fragment in fragments:
        assert fragment in result.output, f"{fragment!r} not in {result.output!r}"


# ---- label files of the full download ----------------------------------------------------------------------------


@pytest.fixture
def v2a_files(tmp_path) -> list[Path]:
    """ladi_v2a_labels_{train,val,test}.csv: label columns in an order other than the label set's, every boolean
    spelling the readers meet (True/False, true/false, 1/0)."""
    columns = list(reversed(V2A))
    v2 = tmp_path / "ladi" / "v2"
    train = write_label_file(v2 / "ladi_v2a_labels_train.csv", [
        ("v2/images/a.jpg", ["True"] + ["False"] * 11),
        ("v2/images/b.jpg", ["false"] * 11 + ["true"]),
        ("v2/images/c.jpg", ["1", "0"] * 6)], columns)
    val = write_label_file(v2 / "ladi_v2a_labels_val.csv", [("v2/images/d.jpg", ["0"] * 12)], columns)
    test = write_label_file(v2 / "ladi_v2a_labels_test.csv", [("v2/images/e.jpg", ["True"] * 12)], columns)
    return [train, val, test]


def test_v2a_files_become_a_labels_csv_with_splits_in_label_set_order(v2a_files, tmp_path, cli):
    out = tmp_path / "labels.csv"
    result = cli("labels", *v2a_files, "--out", out)
    labels = read_written(out)
    assert list(labels.columns) == ["image_id", "split", *V2A]
    assert labels["image_id"].tolist() == [f"v2/images/{name}.jpg" for name in "abcde"]
    assert labels["split"].tolist() == ["train", "train", "train", "val", "test"]
    values = labels.set_index("image_id")[list(V2A)]
    water_any, trees_damage = V2A[-1], V2A[-2]  # first and second column of the files
    assert values.loc["v2/images/a.jpg"].to_dict() == {name: float(name == water_any) for name in V2A}
    assert values.loc["v2/images/b.jpg"].to_dict() == {name: float(name == V2A[0]) for name in V2A}
    c_positives = {name for name, value in values.loc["v2/images/c.jpg"].items() if value == 1.0}
    assert water_any in c_positives and trees_damage not in c_positives and len(c_positives) == 6
    assert values.loc["v2/images/d.jpg"].sum() == 0 and values.loc["v2/images/e.jpg"].sum() == 12
    assert_trains_as_read(out, labels, "ladi-v2a")
    said = cli.said(result)
    assert "LADI v2 label files" in said and "ladi-v2a (12 classes)" in said and "wrote 5 images x 12 classes" in said


def test_v1_subsets_are_tab_separated_and_find_their_label_sets(tmp_path, cli):
    damage = tmp_path / "v1" / "damage_dataset"
    write_label_file(damage / "damage_df_train.csv", [("v1/x.jpg", ["True", "False", "False"]),
                                                      ("v1/y.jpg", ["False", "True", "True"])],
                     ["flood", "rubble", "misc_damage"], sep="\t")
    write_label_file(damage / "damage_df_test.csv", [("v1/z.jpg", ["False", "False", "True"])],
                     ["flood", "rubble", "misc_damage"], sep="\t")
    out = tmp_path / "damage.csv"
    result = cli("labels", damage / "damage_df_train.csv", damage / "damage_df_test.csv", "--out", out)
    labels = read_written(out)
    assert labels.to_dict("list") == {"image_id": ["v1/x.jpg", "v1/y.jpg", "v1/z.jpg"],
                                      "split": ["train", "train", "test"], "flood": [1.0, 0.0, 0.0],
                                      "rubble": [0.0, 1.0, 0.0], "misc_damage": [0.0, 1.0, 1.0]}
    assert "ladi-v1-damage" in cli.said(result)
    infra = write_label_file(tmp_path / "v1" / "infra_dataset" / "infra_df_train.csv",
                             [("v1/w.jpg", ["True", "False"])], ["building", "road"], sep="\t")
    assert "ladi-v1-infrastructure" in cli.said(cli("labels", infra, "--out", tmp_path / "infra.csv"))


def test_a_file_without_a_split_in_its_name_writes_no_split_column(tmp_path, cli):
    source = write_label_file(tmp_path / "my_labels.csv", [("a.jpg", ["True", "False"])], ["building", "road"])
    out = tmp_path / "labels.csv"
    cli("labels", source, "--out", out)
    assert list(read_written(out).columns) == ["image_id", "building", "road"]


def test_a_label_set_file_names_the_classes(tmp_path, cli):
    labelset = tmp_path / "fire.toml"
    labelset.write_text('name = "fire"\nclasses = [\n  { name = "smoke", category = "fire" },\n'
                        '  { name = "flames", category = "fire" },\n]\n', encoding="utf-8")
    source = write_label_file(tmp_path / "fire_train.csv", [("a.jpg", ["1", "0"])], ["flames", "smoke"])
    out = tmp_path / "labels.csv"
    assert_one_line_error(cli("labels", source, "--out", out, **ONE_LINE), "no built-in label set",
                          "['flames', 'smoke']", "--labelset FILE")
    cli("labels", source, "--out", out, "--labelset", labelset)
    assert read_written(out).to_dict("list") == {"image_id": ["a.jpg"], "split": ["train"], "smoke": [0.0],
                                                 "flames": [1.0]}


def test_malformed_label_files_exit_2_with_one_line(v2a_files, tmp_path, cli):
    train, val, _ = v2a_files
    out = tmp_path / "labels.csv"
    no_path = tmp_path / "ladi_v2a_labels_train.csv"
    no_path.write_text("url,bridges_any\nhttps://x/a.jpg,True\n", encoding="utf-8")
    assert_one_line_error(cli("labels", no_path, "--out", out, **ONE_LINE), str(no_path), "no local_path column",
                          "columns found: url, bridges_any")
    lines = train.read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "bad" / "ladi_v2a_labels_train.csv"
    bad.parent.mkdir()
    bad.write_text("\n".join([*lines[:3], lines[3].replace(",1,", ",yes,", 1)]) + "\n", encoding="utf-8")
    assert_one_line_error(cli("labels", bad, "--out", out, **ONE_LINE), f"{bad}, line 4, column 'water_any'",
                          "'yes' is not a boolean")
    extra = write_label_file(tmp_path / "extra" / "ladi_v2a_labels_train.csv",
                             [("a.jpg", ["True"] * 13)], [*V2A, "boats_any"])
    assert_one_line_error(cli("labels", extra, "--out", out, **ONE_LINE), "no built-in label set", "boats_any")
    assert_one_line_error(cli("labels", extra, "--out", out, "--labelset", "ladi-v2a", **ONE_LINE),
                          "columns not in the label set: ['boats_any']")
    assert_one_line_error(cli("labels", train, "--out", out, "--labelset", "ladi-v2", **ONE_LINE),
                          "classes without a column: ['bridges_damage', 'buildings_affected'")
    twice = write_label_file(tmp_path / "twice" / "ladi_v2a_labels_test.csv",
                             [("v2/images/x.jpg", ["0"] * 12), ("v2/images/b.jpg", ["0"] * 12)], list(V2A))
    assert_one_line_error(cli("labels", train, val, twice, "--out", out, **ONE_LINE),
                          "image 'v2/images/b.jpg' is listed twice", f"{train} line 3 and {twice} line 3")
    full = write_label_file(tmp_path / "full" / "ladi_v2a_labels_train_full.csv", [("q.jpg", ["0"] * 12)], V2A)
    assert_one_line_error(cli("labels", full, val, "--out", out, **ONE_LINE), "train_full", "give train_full alone")
    resized = write_label_file(tmp_path / "ladi_v2a_labels_train_resized.csv", [("q.jpg", ["0"] * 12)], V2A)
    assert_one_line_error(cli("labels", train, resized, "--out", out, **ONE_LINE), "both split train")
    assert_one_line_error(cli("labels", train, "--mode", "hard", "--out", out, **ONE_LINE), "--mode: not for")
    assert not out.exists()


# ---- the hosted save_to_disk folder ------------------------------------------------------------------------------


def image_bytes(image_format: str, colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), colour).save(buffer, format=image_format)
    return buffer.getvalue()


def hf_features(labels) -> dict:
    """The `datasets` features of the hosted dataset: an Image and one bool Value per label."""
    return {"image": {"_type": "Image"}, **{name: {"dtype": "bool", "_type": "Value"} for name in labels}}


def write_shard(path: Path, rows: list[tuple[bytes, list[bool]]], labels, batch_rows: int = 2) -> None:
    """One Arrow IPC stream shard as `datasets` writes it: image struct<bytes, path> + bool labels, the features in
    the schema's `huggingface` metadata, rows in batches of ``batch_rows``."""
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image_type), *((name, pa.bool_()) for name in labels)],
                       metadata={"huggingface": json.dumps({"info": {"features": hf_features(labels)}})})
    table = pa.table({"image": pa.array([{"bytes": data, "path": None} for data, _ in rows], image_type),
                      **{name: pa.array([flags[k] for _, flags in rows], pa.bool_())
                         for k, name in enumerate(labels)}}, schema=schema)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)


def write_arrow_folder(root: Path, splits: dict[str, list[list[tuple[bytes, list[bool]]]]], labels=V2A) -> Path:
    """The hosted dataset's main branch: root/data/dataset_dict.json, then per split data-000NN-of-000MM.arrow
    shards, dataset_info.json and state.json. ``splits``: split name -> shards -> rows."""
    data = root / "data"
    data.mkdir(parents=True)
    (data / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}), encoding="utf-8")
    for name, shards in splits.items():
        (data / name).mkdir()
        files = [f"data-{k:05d}-of-{len(shards):05d}.arrow" for k in range(len(shards))]
        for file, rows in zip(files, shards, strict=True):
            write_shard(data / name / file, rows, labels)
        (data / name / "dataset_info.json").write_text(json.dumps(
            {"citation": "", "description": "", "features": hf_features(labels), "homepage": "", "license": ""}))
        (data / name / "state.json").write_text(json.dumps(
            {"_data_files": [{"filename": file} for file in files], "_fingerprint": "0123456789abcdef",
             "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
             "_split": name}))
    return root


def flags(*positive: int) -> list[bool]:
    return [k in positive for k in range(len(V2A))]


@pytest.fixture
def hosted(tmp_path) -> tuple[Path, dict[str, list[bytes]]]:
    """A save_to_disk folder: train in 2 shards (3 + 1 rows, JPEG and PNG), validation and test of one row."""
    jpeg, png = image_bytes("JPEG", (200, 30, 30)), image_bytes("PNG", (10, 120, 240))
    other = image_bytes("JPEG", (0, 90, 0))
    splits = {"train": [[(jpeg, flags(0)), (png, flags(1, 11)), (other, flags())], [(png, flags(3))]],
              "validation": [[(other, flags(5))]], "test": [[(jpeg, flags(*range(12)))]]}
    root = write_arrow_folder(tmp_path / "LADI-v2-dataset", splits)
    return root, {name: [data for shard in shards for data, _ in shard] for name, shards in splits.items()}


def test_arrow_folder_writes_each_image_unchanged_and_its_labels(hosted, tmp_path, cli):
    root, written = hosted
    out, images = tmp_path / "labels.csv", tmp_path / "images"
    result = cli("labels", root, "--out", out, "--images", images)
    labels = read_written(out)
    assert labels["image_id"].tolist() == ["train/0.jpg", "train/1.png", "train/2.jpg", "train/3.png", "val/0.jpg",
                                           "test/0.jpg"]
    assert labels["split"].tolist() == ["train"] * 4 + ["val", "test"]
    originals = written["train"] + written["validation"] + written["test"]
    assert [(images / image_id).read_bytes() for image_id in labels["image_id"]] == originals
    values = labels[list(V2A)].to_numpy()
    expected = np.array([flags(0), flags(1, 11), flags(), flags(3), flags(5), flags(*range(12))], dtype=float)
    np.testing.assert_array_equal(values, expected)
    assert_trains_as_read(out, labels, "ladi-v2a")
    said = cli.said(result)
    assert "LADI v2 Arrow folder" in said and "ladi-v2a" in said
    assert re.search(r"images, train\s*│\s*4 │", result.output) and re.search(r"images, val\s*│\s*1 │", result.output)
    cli("labels", root / "data", "--out", out, "--images", tmp_path / "again")  # the data/ folder itself
    assert read_written(out)["image_id"].tolist() == labels["image_id"].tolist()


def test_malformed_arrow_folders_exit_2_with_one_line(hosted, tmp_path, cli):
    root, _ = hosted
    data, out, images = root / "data", tmp_path / "labels.csv", tmp_path / "images"

    def refused(*fragments: str) -> None:
        assert_one_line_error(cli("labels", root, "--out", out, "--images", images, **ONE_LINE), *fragments)
        assert not out.exists() and not images.exists()

    (data / "test" / "data-00000-of-00001.arrow").write_bytes(b"PK\x03\x04 not arrow")
    refused(f"{data / 'test' / 'data-00000-of-00001.arrow'}: not an Arrow stream file")
    (data / "test" / "data-00000-of-00001.arrow").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:e8f1cec2\nsize 76300000\n")
    refused("a Git LFS pointer", "git lfs pull")
    write_shard(data / "test" / "data-00000-of-00001.arrow", [(b"\xff\xd8", flags())], [*V2A[:11], "water"])
    refused("label columns", "differ from the first shard's")
    write_shard(data / "test" / "data-00000-of-00001.arrow", [(b"\xff\xd8", flags())], V2A)
    shard = data / "validation" / "data-00000-of-00001.arrow"
    schema = pa.schema([("picture", pa.binary()), *((name, pa.bool_()) for name in V2A)])
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, schema):
        pass
    refused(f"{shard}: no 'image' column")
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary())])), *((name, pa.int64()) for name in V2A)])
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, schema):
        pass
    refused(f"{shard}: label column 'bridges_any' is int64, not bool")
    (data / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation", "test", "extra"]}))
    refused("split 'extra' is not one of")
    (data / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "val"]}))
    refused(f"{data / 'val'}: missing", "lists split 'val'")
    (data / "dataset_dict.json").unlink()
    refused(f"{root / 'dataset_dict.json'}: not found")


def test_an_image_without_bytes_is_named_by_shard_and_row(tmp_path, cli):
    rows = [(image_bytes("PNG", (1, 2, 3)), flags()), (None, flags())]
    root = write_arrow_folder(tmp_path / "hosted", {"train": [rows]})
    shard = root / "data" / "train" / "data-00000-of-00001.arrow"
    result = cli("labels", root, "--out", tmp_path / "labels.csv", "--images", tmp_path / "i", **ONE_LINE)
    last = result.output.strip().splitlines()[-1]  # after the progress bar of the export under way
    assert last.startswith("error:") and f"{shard}, row 1 of its batch: the image has no bytes" in last, result.output
    assert not (tmp_path / "labels.csv").exists()


def test_arrow_options_and_kinds_are_checked(hosted, v2a_files, tmp_path, cli):
    root, _ = hosted
    out = tmp_path / "labels.csv"
    assert_one_line_error(cli("labels", root, "--token-map", tmp_path / "map.csv", "--out", out, **ONE_LINE),
                          "--token-map: not for LADI v2 Arrow folder")
    assert_one_line_error(cli("labels", v2a_files[0], "--images", tmp_path, "--out", out, **ONE_LINE),
                          "--images: not for LADI v2 label files")
    assert_one_line_error(cli("labels", root, v2a_files[0], "--out", out, **ONE_LINE), "give one Arrow folder")
    assert_one_line_error(cli("labels", root, "--labelset", "ladi-v2", "--out", out, "--images", tmp_path / "i",
                              **ONE_LINE), "classes without a column")
    assert not out.exists() and not (tmp_path / "i").exists()
