"""Active-speaker detection: mouth motion from landmarks, audio-visual sync scoring, voice check.

* :mod:`.mouth` -- per-frame mouth opening and lip shape from the 68 landmarks, normalised by face
  size, with a validity mask (mouth hidden, face turned away).
* :mod:`.sync` -- :class:`SyncScorer` (plug-in point) and :class:`CorrelationScorer` (default): the
  mouth-motion signal against the speech envelope and band energies over offsets of +-N frames, with a
  SyncNet-style confidence, per-frame speaking probabilities and gated decisions.
* :mod:`.voice` -- speaker embeddings (Resemblyzer's pretrained GE2E encoder when installed, MFCC
  statistics otherwise) and per-person consensus distances.
"""

from dsbuilder.speaker.mouth import MouthTrack, mouth_features
from dsbuilder.speaker.sync import (CorrelationScorer, Gates, OnnxSyncScorer, SyncResult, SyncScorer,
                                    decide, load_scorer, speaking_probability)
from dsbuilder.speaker.voice import VoiceEmbedder, consensus_distances, load_embedder

__all__ = ["MouthTrack", "mouth_features", "SyncScorer", "CorrelationScorer", "OnnxSyncScorer",
           "SyncResult", "Gates", "decide", "load_scorer", "speaking_probability", "VoiceEmbedder",
           "load_embedder", "consensus_distances"]
