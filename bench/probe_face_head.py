"""Does the speech face head read the speech? Its validation loss and jaw-opening correlation on the held-out
windows with their own speech, with another window's speech (the batch rolled by half), and a still face's loss.
Needs ../shared/data.

    python bench/probe_face_head.py [--weights W]
"""
from __future__ import annotations

import argparse

import numpy as np
from common import import_repo_as_package


def main(argv=None) -> int:
    import_repo_as_package()
    import torch

    from echomask.core.model.checkpoint import load_model
    from echomask.core.paths import DEFAULT_MODEL
    from echomask.core.training.data import shared_training_manifest
    from echomask.core.training.generator_data import GeneratorData, builtin_feature_fn, default_cache_dir
    from echomask.core.training.train_face_head import face_batch, face_head_loss, head_inputs, jaw_opening

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(DEFAULT_MODEL), help="weights with a face head (default: the bundled)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    m = load_model(args.weights)
    gen, tok, head = m.generator, m.tokenizers, m.face_head
    entries = shared_training_manifest(model_weight=0.6)
    features = builtin_feature_fn(m.config.generator.speech_backend, default_cache_dir())
    train = GeneratorData(entries, tok, m.config, features, "train", log=lambda *a: None)
    val = GeneratorData(entries, tok, m.config, features, "val", takes=train.ds.takes, log=lambda *a: None)
    batch = face_batch(val, np.arange(len(val)), "cpu")
    target = tok.normalize("face", batch["face"])
    other = np.roll(np.arange(len(val)), len(val) // 2)
    with torch.no_grad():
        for name, order in (("own speech", np.arange(len(val))), ("another window's speech", other)):
            cond, low, high = head_inputs(gen.mam, batch["low"][order], batch["high"][order], False)
            pred = head(cond, low, high)
            loss = float(face_head_loss(pred, target, batch["weight"], 1.0))
            corr = np.corrcoef(jaw_opening(tok.denormalize("face", pred).numpy()).ravel(),
                               jaw_opening(batch["face"].numpy()).ravel())[0, 1]
            print(f"{name}: loss {loss:.3f}  jaw corr {corr:.3f}")
        print(f"still face: loss {float(face_head_loss(torch.zeros_like(target), target, batch['weight'], 1.0)):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
