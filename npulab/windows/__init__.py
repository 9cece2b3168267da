"""npulab.windows: Windows steps, script rendering, upload, LFS, wrappers, lock check."""
