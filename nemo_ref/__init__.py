"""nemo_ref: a readable reference implementation of Mistral Nemo 12B and its sampler."""
