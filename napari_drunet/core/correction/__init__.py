"""The correction project folder: cases, corrections, model versions, and the training data the corrections give."""
