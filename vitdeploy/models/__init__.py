"""Model definitions (export-friendly, checkpoint-compatible)."""
