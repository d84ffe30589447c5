"""compliance."""
