"""The segmentation service: products, their segmentations, and the tag decisions for each event."""
