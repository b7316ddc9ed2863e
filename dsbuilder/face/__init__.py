"""Face detection, landmarks, embeddings and tracking primitives (dlib)."""
