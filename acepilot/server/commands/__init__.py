"""Sub-commands of `acepilot`, one module each."""
