"""Sliding-window inference: options and tile plan, tile geometry, fast paths, lazy volumes, axis order."""
