"""Export to a TF Serving SavedModel and to TFLite/LiteRT files (what `python export.py` runs).

TensorFlow backend only. Nothing here imports training or augmentation code.
"""
