"""Audio deepfake detectors: the offline corpus, features by the app's path, training,
calibration and the card (``python -m training.train_audio``)."""
