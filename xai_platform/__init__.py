"""XAI platform: explain audio deepfake and chest X-ray classifiers (PyTorch and Keras).

Importing the package imports neither PyTorch nor TensorFlow; each framework is imported when
its first model loads.
"""

__version__ = "0.1.0"
