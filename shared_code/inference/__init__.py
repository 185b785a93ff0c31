"""Inference: decoding, preprocessing, the model card, backends, the classifier and the pipeline."""
