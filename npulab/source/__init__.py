"""npulab.source: the pinned upstream: source cache, git, LFS, patch series, env lock."""
