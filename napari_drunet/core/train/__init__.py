"""Training and adaptation: cases, patches, augmentation, losses, the training loop, DDP, batch-norm adaptation."""
