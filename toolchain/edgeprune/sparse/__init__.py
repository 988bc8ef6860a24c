"""Sparse int8 weight formats for the C kernels (kernels_c/include/ep_sparse_s8.h): encoders and storage sizes."""

from edgeprune.sparse.encode import (
    FORMATS, LAYOUTS, SparseWeights, encode, encode_block_sparse, encode_dead_channels, encode_nm,
    encode_unstructured, storage_bytes_by_format,
)

__all__ = [
    "FORMATS", "LAYOUTS", "SparseWeights", "encode", "encode_block_sparse", "encode_dead_channels", "encode_nm",
    "encode_unstructured", "storage_bytes_by_format",
]
