"""Small generated fixtures for the generator/inference tests: a tiny model bundle with random (but
non-degenerate) weights, deterministic stand-in speech features, and synthetic takes with speech."""
from __future__ import annotations

import hashlib

import numpy as np


def fake_features(audio, fps=30.0, low_dim=84, high_dim=43):
    """Deterministic features of the right sizes, a function of the audio content (so chunks of the same
    audio give the same rows): per-frame log energy spread over fixed random directions."""
    n = int(round(len(audio) * fps / 16000))
    hop = 16000 / fps
    idx = (np.arange(n) * hop).astype(np.int64)
    energy = np.array([float(np.sqrt(np.mean(np.square(audio[i:i + int(hop)])) + 1e-9)) for i in idx]) if n else np.zeros(0)
    rng = np.random.default_rng(1234)
    basis_l, basis_h = rng.standard_normal((2, low_dim)), rng.standard_normal((2, high_dim))
    loge = np.log(energy + 1e-4)
    feats = np.stack([loge, loge ** 2 / 10], 1) if n else np.zeros((0, 2))
    return (feats @ basis_l).astype(np.float32), (feats[:, :1] @ basis_h[:1]).astype(np.float32)


def fake_feature_fn_path(wav, fps):
    import soundfile as sf

    audio, _ = sf.read(wav, dtype="float32")
    return fake_features(audio, fps)


def tiny_bundle(path, seed=0):
    """Write a tiny-config model bundle with random weights (codebooks filled) to `path`; returns path."""
    import torch

    from echomask.core.model.checkpoint import save_model
    from echomask.core.model.config import get_config
    from echomask.core.model.generator import EchoMaskGenerator
    from echomask.core.model.tokenizer import TokenizerSet
    from echomask.core.motion.skeleton import PARTS

    torch.manual_seed(seed)
    cfg = get_config("tiny")
    tok = TokenizerSet(cfg)
    for p in PARTS:
        for layer in tok[p].quantizer.layers:
            layer.codebook.copy_(torch.randn_like(layer.codebook))
            layer.initialized.fill_(True)
    gen = EchoMaskGenerator(cfg)
    save_model(path, cfg, tok, gen, {"note": "test fixture"})
    return path


def synthetic_takes(folder, n_takes=2, frames=450, seed=0):
    """BEAT2-format takes with smooth random motion and matching noisy 'speech' wavs in `folder`."""
    import soundfile as sf

    from echomask.core.motion.take import Take, save_take

    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / 30.0
    for k in range(n_takes):
        freq = rng.uniform(0.2, 1.5, (1, 165))
        phase = rng.uniform(0, 6.3, (1, 165))
        poses = (0.15 * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)
        trans = np.zeros((frames, 3), np.float32)
        trans[:, 1] = 1.3
        expr = (0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 2, (1, 100)) * t)).astype(np.float32)
        save_take(Take(poses=poses, trans=trans, expressions=expr), folder / f"take{k}.npz")
        n = int(frames * 16000 / 30)
        env = 0.5 + 0.5 * np.sin(2 * np.pi * 2.0 * np.arange(n) / 16000)
        sf.write(folder / f"take{k}.wav", (0.1 * env * rng.standard_normal(n)).astype(np.float32), 16000)
    return folder


def one_thread():
    """Generator fixture body: tiny models run fastest single-threaded (no thread spin on a busy 2-core
    machine); restores torch's thread count afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def data_fitted_tiny_bundle(path, folder, seed=0, updates=20):
    """A tiny-config bundle whose tokenizers' codebooks are fitted to the takes in `folder` (random
    encoders, codebooks initialised from and EMA-updated on their outputs): tokens then vary with the
    motion as real tokens do, which the learning tests need (random codebooks put every frame on one code)."""
    import torch

    from echomask.core.model.checkpoint import save_model
    from echomask.core.training.data import MotionWindows, folder_manifest
    from echomask.core.model.config import get_config
    from echomask.core.model.generator import EchoMaskGenerator
    from echomask.core.model.tokenizer import TokenizerSet
    from echomask.core.motion.skeleton import PARTS

    torch.manual_seed(seed)
    cfg = get_config("tiny")
    ds = MotionWindows(folder_manifest(folder), "train", cfg.window, cfg.stride, mirror=False, stretch_factors=())
    tok = TokenizerSet(cfg, ds.compute_stats())
    batch = ds.batch(np.arange(len(ds)))["parts"]
    with torch.no_grad():
        for p in PARTS:
            tok[p].quantizer.quantizer_dropout = 0.0
            z = tok[p].encode_latent(tok.normalize(p, torch.from_numpy(batch[p])))
            flat = z.reshape(-1, z.shape[-1])
            for _ in range(updates):
                tok[p].quantizer.forward_train(flat)
    save_model(path, cfg, tok, EchoMaskGenerator(cfg), {"note": "test fixture (codebooks fitted to synthetic takes)"})
    return path
