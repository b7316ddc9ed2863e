"""``dsbuilder review RECIPE``: a local page where a curator plays each clip and accepts or rejects it.

A small web server on 127.0.0.1 (never another interface) serves one page listing the clips of
``clips.parquet`` (each plays its stretch of the track's face clip, with its labels), and the clip
files themselves (only files under the workspace's ``clips/``). Each decision (accept or reject, with a
note) is written at once, atomically, to the review CSV the report stage reads: the recipe's
``stages.report.review``, or ``<workspace>/review.csv`` when the recipe names none. The next
``dsbuilder run`` (or ``dsbuilder report``) applies it: a rejected clip leaves ``clips`` with a
``curator_rejected`` row carrying the note.
"""

from __future__ import annotations

import csv
import html
import io
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from dsbuilder.workspace import Workspace, atomic_write_bytes

log = logging.getLogger(__name__)

DEFAULT_FILE = "review.csv"


def review_file(review_param: str | None, ws: Workspace) -> Path:
    """Where decisions go: ``stages.report.review``, else ``<workspace>/review.csv``."""
    return Path(review_param) if review_param else ws.root / DEFAULT_FILE


def read_decisions(path: Path) -> dict[str, tuple[str, str]]:
    """{clip_id: (decision, note)}; an absent file is no decision yet."""
    from dsbuilder.stages.report import read_review

    return read_review(str(path)) if path.is_file() else {}


def save_decision(path: Path, clip_id: str, decision: str, note: str) -> None:
    """Record one decision (replacing an earlier one for the clip), atomically."""
    if decision not in ("accept", "reject"):
        raise ValueError(f"decision must be accept or reject, not {decision!r}")
    rows = read_decisions(path)
    rows[clip_id] = (decision, note.strip())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["clip_id", "decision", "note"])
    for cid in sorted(rows):
        w.writerow([cid, *rows[cid]])
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def page(ws: Workspace, decisions: dict[str, tuple[str, str]]) -> str:
    from dsbuilder.manifest.io import read_table

    esc = html.escape
    clips = sorted(read_table(ws, "clips").to_pylist(), key=lambda c: (c["person_id"] or "",
                                                                         c["clip_id"]))
    items = []
    for c in clips:
        d, note = decisions.get(c["clip_id"], ("", ""))
        a, b = c.get("crop_start_s") or 0.0, c.get("crop_end_s") or c["duration_s"]
        src = f"/media/{quote(c['video_path'])}#t={a:.3f},{b:.3f}"
        items.append(
            f'<section id="{esc(c["clip_id"])}" class="{esc(d)}"><h3>{esc(c["clip_id"])}</h3>'
            f'<video controls preload="none" width="224" src="{esc(src)}"></video>'
            f'<p>{esc(str(c["person_id"]))}: {esc(str(c["argmax"]))} '
            f'(p {float(c["argmax_prob"] or 0):.2f}), {float(c["duration_s"]):.1f} s, '
            f'{"speaking" if c["speaking"] else "not speaking"}, split {esc(c["split"])}</p>'
            f'<form method="post" action="/decide"><input type="hidden" name="clip_id" '
            f'value="{esc(c["clip_id"])}">'
            f'<label><input type="radio" name="decision" value="accept"'
            f'{" checked" if d == "accept" else ""}> accept</label> '
            f'<label><input type="radio" name="decision" value="reject"'
            f'{" checked" if d == "reject" else ""}> reject</label> '
            f'<input name="note" size="40" placeholder="note" value="{esc(note)}"> '
            f'<button type="submit">save</button></form></section>')
    gone = sorted(cid for cid, (d, _) in decisions.items() if d == "reject"
                  and cid not in {c["clip_id"] for c in clips})
    undo = "".join(
        f'<li>{esc(cid)}: {esc(decisions[cid][1])} <form method="post" action="/decide" '
        f'style="display:inline"><input type="hidden" name="clip_id" value="{esc(cid)}">'
        f'<input type="hidden" name="decision" value="accept"><button>accept again</button>'
        f'</form></li>' for cid in gone)
    style = ("body{font-family:sans-serif;margin:2em}section{border:1px solid #ccc;padding:.5em;"
             "margin:.5em 0}section.reject{background:#fee}section.accept{background:#efe}")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>review</title>"
            f"<style>{style}</style></head><body><h1>Review: {len(clips)} clips</h1>"
            "<p>Decisions are saved at once; run <code>dsbuilder run RECIPE</code> (or "
            "<code>dsbuilder report RECIPE</code>) to apply them.</p>" + "".join(items)
            + (f"<h2>Rejected (no longer in clips)</h2><ul>{undo}</ul>" if undo else "")
            + "</body></html>\n")


def make_server(ws: Workspace, review_path: Path, port: int = 0) -> ThreadingHTTPServer:
    """The review server on 127.0.0.1:``port`` (0: any free port); call ``serve_forever``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("review: " + fmt, *args)

        def _send(self, code: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("#", 1)[0].split("?", 1)[0]
            if path == "/":
                body = page(ws, read_decisions(review_path)).encode("utf-8")
                self._send(200, body, "text/html; charset=utf-8")
                return
            if path.startswith("/media/"):
                rel = unquote(path[len("/media/"):])
                try:
                    f = ws.abspath(rel)
                except Exception:  # noqa: BLE001 - outside the workspace: not served
                    f = None
                if f is None or not f.is_file() or not f.is_relative_to(ws.root / "clips"):
                    self._send(404, b"not found", "text/plain")
                    return
                ctype = "video/mp4" if f.suffix == ".mp4" else "audio/wav"
                self._send(200, f.read_bytes(), ctype, {"Accept-Ranges": "none"})
                return
            self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/decide":
                self._send(404, b"not found", "text/plain")
                return
            n = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(min(n, 1 << 16)).decode("utf-8", "replace"))
            clip_id = (form.get("clip_id") or [""])[0]
            decision = (form.get("decision") or [""])[0]
            try:
                save_decision(review_path, clip_id, decision, (form.get("note") or [""])[0])
            except ValueError as exc:
                self._send(400, str(exc).encode(), "text/plain")
                return
            log.info("review: %s %s", clip_id, decision)
            self._send(303, b"", "text/plain", {"Location": f"/#{quote(clip_id)}"})

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def serve_in_thread(ws: Workspace, review_path: Path, port: int = 0
                    ) -> tuple[ThreadingHTTPServer, str]:
    """Start the server in a daemon thread (tests, notebooks); returns it and its URL."""
    server = make_server(ws, review_path, port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"
