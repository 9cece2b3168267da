"""npulab.build: plan, executor, staging steps, manifest and the build workflow."""
