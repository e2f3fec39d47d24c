"""Output channels: forward maps and posterior moments, written once."""
