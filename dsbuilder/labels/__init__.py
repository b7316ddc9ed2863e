"""Frame labels: action units, emotions, valence/arousal, and their temporal models."""
