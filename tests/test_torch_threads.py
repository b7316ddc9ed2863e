"""Our torch models set the thread count around their own calls, never for the whole process."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (labels / voice extras)")

from dsbuilder.torch_threads import torch_threads  # noqa: E402


@pytest.fixture()
def two_threads():
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(prev)


def test_block_runs_with_the_count_then_restores_it(two_threads):
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == 2
    with torch_threads(None):
        assert torch.get_num_threads() == 2


def test_models_leave_the_process_count_alone(two_threads):
    from dsbuilder.face.resnet_torch import embed_chips
    from dsbuilder.labels import fer
    from dsbuilder.speaker.voice import ResemblyzerEmbedder, resemblyzer_weights

    fer.pull_fer_model()
    fer.TorchFer().predict(np.zeros((2, 64, 64), np.uint8))
    assert torch.get_num_threads() == 2
    embed_chips(np.zeros((1, 150, 150, 3), np.uint8), num_threads=1)
    assert torch.get_num_threads() == 2
    if resemblyzer_weights() is not None:
        ResemblyzerEmbedder().embed(np.zeros(16000, np.float32))
        assert torch.get_num_threads() == 2
