"""Bit-exact on-device digests of tensors, and float statistics of their values.

The public API; ``core`` holds the digest and its eager reference, ``native`` the C kernel for
the CPU, ``triton_kernel`` the one-pass kernel for accelerators Triton drives, ``stats`` the
float statistics. Importing this package imports torch.
"""

from sdc.digest.core import (
    Bucket,
    allow_compile,
    bucket_sums,
    combine_sums,
    digest,
    digest_sums,
    eager_digest_sums,
    integer_words,
    plan_buckets,
    squared_norm,
    tensor_sums,
    word_count,
)
from sdc.digest.stats import FloatStats, float_stats

__all__ = [
    "Bucket", "FloatStats", "allow_compile", "bucket_sums", "combine_sums", "digest", "digest_sums", "eager_digest_sums",
    "float_stats", "integer_words", "plan_buckets", "squared_norm", "tensor_sums", "word_count",
]
