import numpy as np, torch

def to_tensor(pic):
    a = np.asarray(pic)
    if a.ndim == 2:
        a = a[:, :, None]
    t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
    if t.dtype == torch.uint8:
        return t.float().div(255)
    return t
