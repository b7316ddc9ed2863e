"""Who is this face? The recipe people's reference embeddings and the rule that names a track.

:class:`Dictionary` holds, per person, the kept dictionary embeddings and the fitted match threshold
(as the dictionary stage wrote them to ``faces_dictionary`` and ``people``). :meth:`Dictionary.identify`
takes a track's sample embeddings: the median distance to each person's references, the nearest
person if within their threshold, nobody otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

@dataclass(frozen=True)
class PersonRef:
    """One person's reference faces: kept dictionary embeddings and the fitted match threshold."""

    person_id: str
    embeddings: np.ndarray  # (n, 128) float32
    threshold: float | None  # None: none fitted (usable only with the match_threshold override)


@dataclass(frozen=True)
class Identity:
    """The outcome of identifying one track."""

    person_id: str | None  # None: nobody in the recipe
    distance: float | None  # median distance to the nearest person (person_id's when matched)
    threshold: float | None  # the threshold that distance was judged by
    second_person_id: str | None  # matched: the runner-up; not matched: the nearest person
    second_distance: float | None


@dataclass(frozen=True)
class Dictionary:
    """The reference faces of every recipe person, as the dictionary stage wrote them."""

    people: tuple[PersonRef, ...]

    @classmethod
    def from_rows(cls, face_rows: Iterable[Mapping[str, Any]],
                  people_rows: Iterable[Mapping[str, Any]]) -> "Dictionary":
        """From ``faces_dictionary`` rows (only kept ones with an embedding count) and ``people``."""
        thresholds = {r["person_id"]: r.get("threshold") for r in people_rows}
        by_person: dict[str, list[tuple[str, np.ndarray]]] = {}
        for r in face_rows:
            if r.get("kept") and r.get("embedding") is not None:
                by_person.setdefault(r["person_id"], []).append(
                    (str(r.get("face_id", "")), np.asarray(r["embedding"], np.float32)))
        people = []
        for pid in sorted(by_person):
            faces = sorted(by_person[pid], key=lambda f: f[0])
            thr = thresholds.get(pid)
            people.append(PersonRef(pid, np.stack([e for _, e in faces]),
                                    None if thr is None else float(thr)))
        return cls(tuple(people))

    @classmethod
    def from_workspace(cls, ws: Any) -> "Dictionary":
        """From a workspace's ``faces_dictionary`` and ``people`` manifests."""
        from dsbuilder.manifest.io import read_table

        return cls.from_rows(read_table(ws, "faces_dictionary").to_pylist(),
                             read_table(ws, "people").to_pylist())

    def __len__(self) -> int:
        return len(self.people)

    def content_hash(self) -> str:
        """Hash of what decides identities: person ids, embeddings and thresholds."""
        h = hashlib.sha256()
        for p in self.people:
            h.update(p.person_id.encode() + b"\0")
            h.update(np.ascontiguousarray(p.embeddings, "<f4").tobytes())
            h.update(repr(p.threshold).encode() + b"\0")
        return h.hexdigest()[:32]

    def identify(self, embeddings: Sequence[np.ndarray], override: float | None = None) -> Identity:
        """Median distance of ``embeddings`` to each person; the nearest person if within threshold."""
        from dsbuilder.face import api

        ranked = []
        for p in self.people:
            thr = override if override is not None else p.threshold
            if thr is None or not len(p.embeddings):
                continue
            ranked.append((api.median_distance(list(embeddings), p.embeddings), p.person_id, thr))
        ranked.sort()
        if not ranked:
            return Identity(None, None, None, None, None)
        (d1, p1, t1), second = ranked[0], (ranked[1] if len(ranked) > 1 else None)
        if d1 <= t1:
            return Identity(p1, d1, t1, second[1] if second else None, second[0] if second else None)
        return Identity(None, d1, t1, p1, d1)
