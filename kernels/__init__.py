"""Triton kernels (installed as ``nemo_ref.kernels``): attention (prefill, decode) and sampling."""
