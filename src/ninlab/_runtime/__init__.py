"""Process plumbing private to ninlab: atomic writes, the host allocator, the environment report, message filters,
the end of multi-process runs."""
