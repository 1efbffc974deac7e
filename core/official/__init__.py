"""Running the authors' official EchoMask release in this product (docs/OFFICIAL_RELEASE.md).

convert.py       official checkpoint files -> this project's model bundle (`python -m core convert-official`)
global_motion.py the release's translation predictor (a conv net on the lower-body features)
hubert.py        HuBERT-large speech features exactly as the release was trained (local files only)
pipeline.py      the release's windowed inference (seed rebuild, stitching, translation) on our models
seeded.py        the parity fixtures' seeded-parameter recipe (tests, benchmark)

No official source is copied or imported: everything follows docs/OFFICIAL_RELEASE_FORMAT.md.
"""
