"""The score index refuses corrupt stored rows with an InputError naming the file and the shot."""

import re
import sqlite3

import numpy as np
import pytest

from dsdi.errors import InputError
from dsdi.index import ClipScores, ScoreIndex
from dsdi.schema import NUM_CLASSES
from dsdi.video import Clip


def stored_index(tmp_path) -> ScoreIndex:
    clip = Clip("Shot1_001", tmp_path / "Shot1_001.mp4")
    clip.path.write_bytes(b"not really a video")
    index = ScoreIndex(tmp_path / "out")
    index.set_clips([clip])
    values = np.linspace(0.0, 1.0, NUM_CLASSES)
    index.add_clip(clip, {"m1": ClipScores(8, "ok", "", values, values, values, np.zeros(NUM_CLASSES))})
    return index


@pytest.mark.parametrize("stored", ["[0.5, 0.25]", "not json", '{"a": 1}', '[["x"]]'])
def test_corrupt_stored_scores_raise_input_error(tmp_path, stored):
    index = stored_index(tmp_path)
    try:
        assert list(index.model_scores("m1")["Shot1_001"].max_scores) == list(np.linspace(0.0, 1.0, NUM_CLASSES))
        with sqlite3.connect(index.path) as db:
            db.execute("UPDATE model_scores SET mean_scores = ? WHERE shot_id = 'Shot1_001'", (stored,))
        expected = (f"{re.escape(str(index.path))}: the stored scores of shot 'Shot1_001' \\(model m1\\) are corrupt; "
                    f"delete {re.escape(str(index.path))} and run dsdi rank again")
        with pytest.raises(InputError, match=expected):
            index.model_scores("m1")
    finally:
        index.close()
