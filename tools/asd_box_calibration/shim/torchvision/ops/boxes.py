import torch

def nms(boxes, scores, iou_threshold):
    """Greedy NMS, torchvision semantics (area = (x2-x1)*(y2-y1), no +1)."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    boxes = boxes.float()
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True)
    keep = []
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    for oi in range(len(order)):
        if suppressed[oi]:
            continue
        i = order[oi]
        keep.append(int(i))
        rest = order[oi + 1:]
        xx1 = torch.maximum(x1[i], x1[rest]); yy1 = torch.maximum(y1[i], y1[rest])
        xx2 = torch.minimum(x2[i], x2[rest]); yy2 = torch.minimum(y2[i], y2[rest])
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[oi + 1:] |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)

def batched_nms(boxes, scores, idxs, iou_threshold):
    """Per-category NMS via the coordinate-offset trick, as torchvision does."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)
