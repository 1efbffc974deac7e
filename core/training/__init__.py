"""Training: data sets (the shared manifest, BEAT2 folders, the on-disk window store and streaming), the
generator's and the tokenizers' trainers, diagnostics (token baselines, context and speech probes) and
torch.distributed (DDP) support. Imports torch; never loaded inside Blender."""
