"""The EchoMask model (torch): configs, motion tokenizers (RVQ-VAEs), and the generator.

Importing this package does not import torch; import the submodules (`core.model.tokenizer`, ...) that
need it. `config` is plain dataclasses.
"""
from .config import FORMAT_VERSION, ModelConfig, TokenizerConfig, get_config

__all__ = ["FORMAT_VERSION", "ModelConfig", "TokenizerConfig", "get_config"]
