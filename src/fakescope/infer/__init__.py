"""Inference: predict on images, folders and videos."""
