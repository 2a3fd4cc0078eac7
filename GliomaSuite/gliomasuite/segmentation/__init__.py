"""Tumour segmentation: the V-Net, its training, and inference on a study."""
