"""Minimal torchvision shim (only what facenet_pytorch's detect_face.py needs)."""
