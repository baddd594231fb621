"""Binary chest X-ray detectors: the lesion benchmark, data readers (benchmark, CheXpert),
augmentation, training, calibration and the card (``python -m training.train_xray``)."""
