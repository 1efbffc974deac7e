"""Does the speech face head read the speech? Its validation loss and jaw-opening correlation on the held-out
windows with their own speech, with another window's speech (the batch rolled by half), and a still face's loss.
Needs ../shared/data.

    python bench/probe_face_head.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.model.checkpoint import load_model  # noqa: E402
from core.training.data import shared_training_manifest  # noqa: E402
from core.training.generator_data import GeneratorData, builtin_feature_fn, default_cache_dir  # noqa: E402
from core.training.train_face_head import face_batch, head_inputs, face_head_loss, jaw_opening  # noqa: E402
torch.set_num_threads(1)
m = load_model(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'weights', 'echomask_small.safetensors')); g, tok, head = m.generator, m.tokenizers, m.face_head
entries = shared_training_manifest(model_weight=0.6)
feat = builtin_feature_fn(m.config.generator.speech_backend, default_cache_dir())
tr = GeneratorData(entries, tok, m.config, feat, "train", log=lambda *a: None)
val = GeneratorData(entries, tok, m.config, feat, "val", takes=tr.ds.takes, log=lambda *a: None)
b = face_batch(val, np.arange(len(val)), "cpu")
target = tok.normalize("face", b["face"])
perm = np.roll(np.arange(len(val)), len(val) // 2)
with torch.no_grad():
    for name, order in (("own speech", np.arange(len(val))), ("another window's speech", perm)):
        c, sl, sh = head_inputs(g.mam, b["low"][order], b["high"][order], False)
        pred = head(c, sl, sh)
        loss = float(face_head_loss(pred, target, b["weight"], 1.0))
        corr = np.corrcoef(jaw_opening(tok.denormalize("face", pred).numpy()).ravel(), jaw_opening(b["face"].numpy()).ravel())[0, 1]
        print(f"{name}: loss {loss:.3f}  jaw corr {corr:.3f}")
    print("still face: loss %.3f" % float(face_head_loss(torch.zeros_like(target), target, b["weight"], 1.0)))
