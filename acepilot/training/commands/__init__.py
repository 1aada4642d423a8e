"""Sub-commands of `acepilot` that belong to the training side, one module each."""
