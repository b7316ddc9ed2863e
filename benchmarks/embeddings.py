"""Benchmark face embeddings: dlib's ResNet vs its PyTorch port (dsbuilder.face.resnet_torch).

Run from the repository root::

    .venv/bin/python benchmarks/embeddings.py [--runs 5]

Inputs: 8 aligned 150x150 chips (Grace Hopper and the astronaut, each as is, mirrored, darkened and
rotated), made as tests/test_resnet_torch.py makes them. Both models are loaded and warmed up before
any clock starts. Every figure is the median over ``--runs`` runs, in milliseconds per face.

1. **Speed.** dlib ``compute_face_descriptor(chip)`` one chip at a time and on a list of 8 chips;
   the torch port (``embed_chips``) with batches of 1 and of 8, at torch's default thread count and
   with one thread.
2. **Parallelism with Python threads.** The same work (8 chips, batch 1 for dlib and 8 for torch)
   done once in one thread, then twice at once in two threads: if the GIL is released the two-thread
   wall time stays close to the one-thread time (given free cores); if it is held it doubles. Run
   with torch limited to one intra-op thread, so that two threads can use the two cores. Then a
   pure-Python counting loop in a second thread, alone and while the model runs: its rate shows how
   much the model lets other Python code run.

Prints only; figures are recorded by hand in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def make_chips() -> np.ndarray:
    from test_resnet_torch import _chip, _variants

    from dsbuilder import synth

    images = _variants(synth.grace_hopper()) + _variants(synth.astronaut())
    return np.stack([_chip(img) for img in images])


def median_seconds(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ms_per_face(fn, runs: int, n_faces: int) -> float:
    return 1000 * median_seconds(fn, runs) / n_faces


def in_threads(fn, n_threads: int) -> float:
    """Wall time of ``n_threads`` threads each running ``fn`` once, started together."""
    barrier = threading.Barrier(n_threads + 1)

    def work():
        barrier.wait()
        fn()

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def python_loop_rate(seconds: float, stop_when=None) -> float:
    """Iterations per second of a pure-Python loop, for ``seconds`` or until ``stop_when`` is set."""
    count, start = 0, time.perf_counter()
    while True:
        for _ in range(1000):
            count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds or (stop_when is not None and stop_when.is_set()):
            return count / elapsed


def python_rate_while(fn) -> float:
    """The pure-Python loop's rate in a second thread while ``fn`` runs in this one."""
    done = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "rate", python_loop_rate(1e9, stop_when=done)))
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return result["rate"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    import torch

    from dsbuilder.face import api, resnet_torch

    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    chips = make_chips()
    n = len(chips)
    dlib_net = api._models()["resnet"]
    chip_list = list(chips)
    start = time.perf_counter()
    resnet_torch.load_dlib_resnet()
    print(f"torch port load (read .dat + build): {1000 * (time.perf_counter() - start):.0f} ms")

    def dlib_one_at_a_time():
        for chip in chips:
            dlib_net.compute_face_descriptor(chip)

    def dlib_list():
        dlib_net.compute_face_descriptor(chip_list)

    def torch_batch1():
        for chip in chips:
            resnet_torch.embed_chips(chip[None])

    def torch_batch8():
        resnet_torch.embed_chips(chips, batch_size=8)

    for fn in (dlib_one_at_a_time, dlib_list, torch_batch1, torch_batch8):
        fn()  # warm-up

    default_threads = torch.get_num_threads()
    print(f"\n1. speed, ms per face (median of {args.runs} runs of {n} faces)")
    print(f"  dlib, one chip at a time          {ms_per_face(dlib_one_at_a_time, args.runs, n):7.1f}")
    print(f"  dlib, list of {n} chips             {ms_per_face(dlib_list, args.runs, n):7.1f}")
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        print(f"  torch port, batch 1, {threads} thread(s)  {ms_per_face(torch_batch1, args.runs, n):7.1f}")
        print(f"  torch port, batch 8, {threads} thread(s)  {ms_per_face(torch_batch8, args.runs, n):7.1f}")

    torch.set_num_threads(1)
    print(f"\n2. two Python threads at once (torch limited to 1 intra-op thread); wall time, "
          f"median of {args.runs}")
    for name, fn in (("dlib, one chip at a time", dlib_one_at_a_time),
                     ("torch port, batch 8", torch_batch8)):
        one = statistics.median(in_threads(fn, 1) for _ in range(args.runs))
        two = statistics.median(in_threads(fn, 2) for _ in range(args.runs))
        print(f"  {name:26s} 1 thread {1000 * one:7.0f} ms, 2 threads {1000 * two:7.0f} ms "
              f"(x{two / one:.2f}; 1.0 = fully parallel, 2.0 = serialised)")

    alone = python_loop_rate(1.0)
    print(f"  pure-Python loop alone: {alone / 1e6:.1f} M iterations/s; while the model runs in "
          f"another thread:")
    for name, fn in (("dlib, one chip at a time", dlib_one_at_a_time),
                     ("torch port, batch 8", torch_batch8)):
        rate = python_rate_while(fn)
        print(f"    {name:26s} {rate / 1e6:5.1f} M/s ({100 * rate / alone:3.0f}% of alone)")
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
