"""Retraining: the training set a drifted window makes, one submission per window, and its launchers."""
