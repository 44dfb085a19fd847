"""The genie-worker process (placeholder)."""
