"""Input preprocessing: audio (decode, resample, log-mel) and images (PNG / JPEG / DICOM X-rays)."""
