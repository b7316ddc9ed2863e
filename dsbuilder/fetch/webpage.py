"""The images of an HTML page: ``<img src>`` and ``srcset`` (largest candidate), resolved and unique.

Only the standard library's :mod:`html.parser` is used. ``<base href>`` is honoured when resolving
relative URLs, ``data:`` URIs are skipped, lazy-loading attributes (``data-src``, ``data-srcset``) are
read when ``src``/``srcset`` are missing, and a page-wide licence link (``<link rel="license">`` or
``<a rel="license">``) is reported so photos can carry it.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit


@dataclass(frozen=True)
class PageImage:
    """One image found on a page: its absolute URL and its ``alt`` text (may be empty)."""

    url: str
    alt: str


@dataclass(frozen=True)
class PageImages:
    """What :func:`extract_images` found."""

    images: list[PageImage]
    title: str | None
    licence_url: str | None  # href of the first rel="license" link, absolute


def parse_srcset(value: str) -> list[tuple[str, str]]:
    """Split a ``srcset`` attribute into ``(url, descriptor)`` pairs, following the HTML rules.

    A URL runs to the next whitespace; a trailing comma ends it with no descriptor. The descriptor runs
    to the next comma outside parentheses.

    >>> parse_srcset("a.jpg 1x, b.jpg 2x")
    [('a.jpg', '1x'), ('b.jpg', '2x')]
    >>> parse_srcset("small.jpg 320w,large.jpg 1024w")
    [('small.jpg', '320w'), ('large.jpg', '1024w')]
    """
    out: list[tuple[str, str]] = []
    pos, n = 0, len(value)
    while pos < n:
        while pos < n and (value[pos].isspace() or value[pos] == ","):
            pos += 1
        if pos >= n:
            break
        start = pos
        while pos < n and not value[pos].isspace():
            pos += 1
        url = value[start:pos]
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            start, depth = pos, 0
            while pos < n and (value[pos] != "," or depth):
                if value[pos] == "(":
                    depth += 1
                elif value[pos] == ")":
                    depth = max(0, depth - 1)
                pos += 1
            descriptor = value[start:pos].strip()
        if url:
            out.append((url, descriptor))
    return out


def largest_candidate(value: str) -> str | None:
    """The URL of the largest ``srcset`` candidate: the widest ``w``, else the densest ``x``.

    A candidate without a descriptor counts as ``1x``. Ties keep the first.

    >>> largest_candidate("a.jpg 320w, b.jpg 1024w, c.jpg 640w")
    'b.jpg'
    >>> largest_candidate("a.jpg, b.jpg 2x")
    'b.jpg'
    """
    best_url, best_key = None, None
    for url, desc in parse_srcset(value):
        key = (0, 1.0)  # (is a width descriptor, size)
        d = desc.split()[0].lower() if desc else ""
        try:
            if d.endswith("w"):
                key = (1, float(d[:-1]))
            elif d.endswith("x"):
                key = (0, float(d[:-1]))
        except ValueError:
            continue  # an invalid descriptor: the candidate is ignored, as browsers do
        if best_key is None or key > best_key:
            best_url, best_key = url, key
    return best_url


class _ImageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.raw: list[tuple[str, str]] = []  # (url as written, alt)
        self.licence: str | None = None
        self._in_title = False
        self.title_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "base" and a.get("href") and self.base is None:
            self.base = a["href"].strip()
        elif tag == "img":
            srcset = a.get("srcset") or a.get("data-srcset") or ""
            src = largest_candidate(srcset) if srcset.strip() else None
            src = src or (a.get("src") or a.get("data-src") or "").strip()
            if src:
                self.raw.append((src, " ".join(a.get("alt", "").split())))
        elif tag in ("link", "a") and "license" in a.get("rel", "").lower().split():
            if a.get("href") and self.licence is None:
                self.licence = a["href"].strip()
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)


def extract_images(html: str, page_url: str) -> PageImages:
    """The unique images of ``html`` (served from ``page_url``), in page order, as absolute URLs.

    URLs are resolved against ``<base href>`` (itself resolved against ``page_url``) and lose their
    ``#fragment``; only ``http``/``https`` URLs are kept; a URL seen twice is listed once.
    """
    parser = _ImageParser()
    parser.feed(html)
    parser.close()
    base = urljoin(page_url, parser.base) if parser.base else page_url
    seen: set[str] = set()
    images: list[PageImage] = []
    for src, alt in parser.raw:
        if src.lower().startswith("data:"):
            continue
        url = urldefrag(urljoin(base, src)).url
        if urlsplit(url).scheme not in ("http", "https") or url in seen:
            continue
        seen.add(url)
        images.append(PageImage(url, alt))
    title = " ".join("".join(parser.title_parts).split()) or None
    licence = urljoin(base, parser.licence) if parser.licence else None
    return PageImages(images, title, licence)
