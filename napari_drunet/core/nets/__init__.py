"""The networks: U-Net family torch modules and their building blocks (no files, no images)."""
