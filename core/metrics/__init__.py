"""Motion-quality metrics (old EMAGE protocol, docs/METHOD.md §8) and plausibility checks.

Numpy-only modules (usable without torch): kinematics, beat (BC; librosa imported inside), diversity,
face, plausibility, frechet. The FGD evaluator (`fgd_evaluator`, `fgd_training`) needs torch and is
imported only where it is used.
"""
