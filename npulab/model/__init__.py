"""npulab.model: the pinned Hugging Face model: pin and fetch."""
