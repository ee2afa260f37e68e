"""The embedded synthetic world: LADI-like aerial images, crowd answers, shot clips and their ground truth.

``build_world(out_dir)`` (CLI: ``dsdi synth --out OUT_DIR``) writes the LADI v1 world (``labelset="ladi-v1"``,
the default)::

    OUT/images/img_000123.jpg            procedurally rendered aerial scenes (default 640x480 JPEG, quality 90),
                                         then the outliers (ids continue after the n_images normal ones)
    OUT/ladi_aggregated_responses_url.tsv LADI format: url, WorkerId, Answer (one row per worker and category;
                                         the outliers' rows after the normal images')
    OUT/true_labels.csv                  image_id (= the url) + 37 0/1 columns named schema.CLASSES
                                         (+ a last 0/1 column ``outlier`` when outlier_rate > 0)
    OUT/clips/ShotN_MMM.mp4              H.264 (libx264, yuv420p), 30 fps, 640x360, panning over a large scene
    OUT/clips.csv                        shot_id, clip_path, duration_s, frames, fps, width, height
    OUT/clip_truth.csv                   shot_id, feature, fnum, start_s, end_s, frames, sampled
    OUT/qrels.txt                        ``fNum 0 shotId rel`` for every feature x clip

Ground truth
- Images: a feature is in ``true_labels.csv`` when it was drawn. ``<category>: none`` is 1 when no feature of
  that category was drawn. Image ids are LADI-like urls ``https://ladi.s3.amazonaws.com/synth/img_000123.jpg``
  whose basename is the file name.
- Annotations: per image and category, 3-6 simulated workers (``workers_per_category``); each names a drawn
  feature with probability ``1 - miss_rate`` and an absent feature of that category with ``false_rate``; a
  worker who names nothing answers ``['<category>:none']``. Tokens come from ``dsdi/data_files/token_map.csv``.
- Outliers (paper Fig. 5; ``outlier_rate`` R, default 0): ``round(R * n / (1 - R))`` extra images, so that
  they are R of all images, that show no feature: plain sky, heavily blurred bare ground, near-black frames
  with sensor noise, lens flares (the kinds in turn, ``outliers.OUTLIER_KINDS``). Their true labels are 0
  for every feature and 1 for every ``<category>: none``, and ``outlier`` is 1. Yet the crowd (the same
  worker pool) labels each as if it showed a label vector drawn like a normal image's (``sample_labels``
  without the min_per_feature forcing): their answers are wrong. Outliers use their own generator streams,
  so the normal images, their answers and the clips are byte-identical to the world without outliers.
- Clips: a feature is *visible in a frame* when at least ``min(MIN_VISIBLE_PX * scale**2, 0.5 * its drawn area
  in the scene)`` of its drawn pixels lie inside that frame's viewport (occlusion by later layers is ignored;
  scale = min(width / 640, height / 360)).
  ``clip_truth.csv`` has one row per maximal run of visible frames (30 fps): ``start_s`` = first frame index / fps,
  ``end_s`` = (last frame index + 1) / fps, ``frames`` = frames in the run, ``sampled`` = 1 when the run contains a
  frame the 10 fps sampler decodes (t = 0, 0.1, 0.2 ..., i.e. every third frame). ``qrels.txt`` has rel 1 for a
  feature and shot when any of its runs is sampled, else 0; it lists every feature (fNum order) x shot.

Clips last between the two ``clip_seconds`` bounds (default 3-12 s, skewed short: min + span * u**3), at
30 fps; the camera pans in a straight line at 70-200 px/s (times scale) over a scene drawn for the whole path;
a quarter of the objects are placed near the end of the pan so that they are on screen briefly (often under
a second).
Scenes are drawn at RENDER_SCALE (half) resolution and upsampled; environment classes are textured cells of
a noisy Voronoi partition, the other features are objects drawn in painter's order (water, damage, lines,
buildings, vehicles, smoke on top). Clip frames are piped to ffmpeg as raw YUV 4:2:0 planes (see encode_clip).

Frequencies follow the long tail of paper Table 1: feature j is drawn with probability
``p_top * (n_j / n_max) ** a`` where ``a`` puts the rarest class (lava) at ``p_min``; the order of Table 1 is
kept exactly, and every feature is forced into at least ``min_per_feature`` images. Clips draw features the
same way with a flatter tail, CLIP_FEATURE_PROBABILITY (0.30 .. 0.04, mean 0.16: about 5 features per clip),
each feature in at least CLIP_MIN_PER_FEATURE clips, so that every feature has relevant shots to rank and a
random ranking scores a low mAP (dense qrels would make chance look good). Everything is
deterministic per seed (each image and clip has its own generator ``default_rng([seed, part, index])``).

The LADI v2a world (``labelset="ladi-v2a"``, ``dsdi synth --labelset ladi-v2a``) writes::

    OUT/images/img_000123.jpg            v1 looks drawn closer (object boxes x1.8), plus building damage marks
                                         and downed trees
    OUT/labels.csv                       the labels CSV train reads: image_id (the file name, relative to
                                         images/), split (train / val / test), the 12 v2a classes (0/1): per
                                         class the majority of three annotators (no per-annotator answers, as
                                         LADI v2 releases none)
    OUT/true_labels.csv                  the same columns with the true labels
    OUT/clips/, clips.csv, clip_truth.csv, qrels.txt   as above, with the 12 v2a classes; a class's TREC
                                         topic is its name (``roads_any 0 Shot1_001 1``); clip_truth's third
                                         column is ``topic``

A v2a picture is a scene of drawn elements (``ladi_v2a.ELEMENTS``: trees, ground cover, water, flooding, houses
in flood water, downed trees, road, road washout, bridge, buildings at one FEMA damage level, rubble, vehicles);
its labels are derived from what is drawn (``ladi_v2a.SHOWS``, hierarchy in the ladi_v2a docstring). An
annotator misses each drawn element with ``miss_rate``, imagines each absent one with ``false_rate`` and labels
what he saw. About 80 / 10 / 10 % of the images are train / val / test; the test images (the last ids) come from
a later event: more flooding, sandier ground, a warm haze. Clips and qrels follow the visibility rule above,
per element, then per class.

Modules, each using only those above it: ``canvas`` (the drawing surface and shapes), ``looks`` (how each
feature is drawn, ``LookSet``: a world's drawable elements), ``scenes`` (render_image / render_still,
render_clip / render_pan), ``outliers`` (render_outlier: pictures without a feature), ``crowd`` (label
sampling, simulated workers), ``clips`` (encoding, visible runs, ``ClipDesign``, clip truth and qrels),
``ladi_v2a`` (the v2a world's elements, label derivation, events, splits and vote), ``world`` (build_world),
``ladi_shape`` (Table 1 prevalence, co-occurrence by a Gaussian copula, world_frequencies), ``annotators``
(``AnnotatorModel``: workers with their own rates, careless and none-clicking workers, misses growing as an
object's cover shrinks, shared image difficulty, sibling confusions; annotation_statistics), ``ladi_world``
(build_ladi_world: the claims study's LADI-shaped world with per-image cover, layout in its docstring;
scenes.render_still_with_cover gives the cover).
"""

from dsdi.synth.clips import encode_clip, shot_id, visible_runs
from dsdi.synth.crowd import (
    feature_probabilities,
    sample_labels,
    simulate_annotations,
    with_none_classes,
    worker_ids,
)
from dsdi.synth.outliers import OUTLIER_KINDS, render_outlier
from dsdi.synth.scenes import ClipScene, render_clip, render_image
from dsdi.synth.world import LABELSETS, World, build_world, outlier_count

__all__ = ["World", "build_world", "LABELSETS", "outlier_count", "feature_probabilities", "sample_labels",
           "with_none_classes", "simulate_annotations", "worker_ids", "render_image", "render_clip",
           "render_outlier", "OUTLIER_KINDS", "encode_clip", "visible_runs", "shot_id", "ClipScene"]
