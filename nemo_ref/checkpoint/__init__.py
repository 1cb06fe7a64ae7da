"""Load and save the two published checkpoint layouts of Mistral Nemo, with clear errors.

Two layouts ship in the same Hugging Face repository (docs/architecture.md
"Checkpoint layouts and the q/k permutation"):

* **mistral**: ``params.json`` + one ``consolidated.safetensors``; tensor names are exactly the
  parameter names of :class:`nemo_ref.model.Transformer` (``layers.3.attention.wq.weight``...).
* **hf**: ``config.json`` + ``model-0000N-of-0000M.safetensors`` shards listed by
  ``model.safetensors.index.json`` (or a single ``model.safetensors``); transformers' names
  (``model.layers.3.self_attn.q_proj.weight``...), and the rows of ``q_proj``/``k_proj`` permuted
  within each head for transformers' rotate-half RoPE convention.

Loading is done in two phases so that a bad checkpoint never yields a half-loaded model:

1. **Plan** (:func:`_plan`): parse the config, read and validate every safetensors *header* (sizes
   checked against the file length before any data is read or memory-mapped: touching a mapping
   past the end of a truncated file is a bus error, not an exception), map names, and check that
   the set of tensors, their shapes and dtypes are exactly what the config implies. Any problem
   raises :class:`CheckpointError` naming the file or tensor.
2. **Load**: build the model on the ``meta`` device (no memory), then read the tensors one at a time
   with safetensors' ``safe_open``, convert each to the target dtype and device (un-permuting HF
   q/k rows), and assign it as the parameter. Peak host memory is the model plus at most one
   tensor. safetensors >= 0.8 reads with ``pread`` straight into the tensor's own memory (no copy
   when the dtype matches); older versions memory-map the file, and then the tensor is copied out
   and the mapping closed before the next one -- a mapping kept open would leave every page it
   touched resident, doubling peak memory (measured: 2x with one open mapping, 1.3x with one per
   tensor on a small model whose embedding is a third of the weights, 1.0x with ``pread``).

Saving streams tensors one at a time into safetensors files written by a small writer below (the
format is 8 bytes of header length, a JSON header, then the raw little-endian bytes), so saving a
model in another dtype never materialises a second full copy.
"""

from __future__ import annotations

from .files import CheckpointError, TensorInfo, read_safetensors_header
from .load import load_model
from .names import hf_to_mistral_name, mistral_to_hf_name, permute_for_hf, unpermute_from_hf
from .plan import LAYOUTS, Layout, detect_layout, inspect_checkpoint
from .save import DEFAULT_MAX_SHARD_BYTES, convert_checkpoint, save_checkpoint

__all__ = [
    "DEFAULT_MAX_SHARD_BYTES",
    "LAYOUTS",
    "CheckpointError",
    "Layout",
    "TensorInfo",
    "convert_checkpoint",
    "detect_layout",
    "hf_to_mistral_name",
    "inspect_checkpoint",
    "load_model",
    "mistral_to_hf_name",
    "permute_for_hf",
    "read_safetensors_header",
    "save_checkpoint",
    "unpermute_from_hf",
]
