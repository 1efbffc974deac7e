"""EchoMask core: everything that runs without Blender.

Folders by idea: motion/ (takes, SMPL-X skeleton and maths, parts, root motion, BVH), speech/ (audio, speech
features, phones, HuBERT), model/ (tokenizers, MAM, SQA, generator, checkpoints), generation/ (options, the
window loop, decoding, post-processing), training/ (data sets, trainers, diagnostics, DDP), metrics/ (eval,
motion matching), face/ (lip sync, face mapping), retarget/ (other rigs), official/ (the authors' release),
jobs/ (the CLI, the worker and its protocol and client, batch generation); paths.py and errors.py are
shared. Never imports bpy; uses relative imports only, so it works as the extension's sub-package, as a
worker process (`python -m core.jobs.worker`) and from the command line (`python -m core`). Heavy modules
(torch, librosa) are imported by the submodules that need them, never here.
"""

__version__ = "0.1.0"
