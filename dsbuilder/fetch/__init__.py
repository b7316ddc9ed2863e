"""Fetching media from the web and from local disks, politely and resumably.

The scrape stage (:mod:`dsbuilder.stages.scrape`) decides *what* to fetch and records outcomes; the
modules here do the fetching:

* :mod:`~dsbuilder.fetch.common`: the failure type (:class:`~dsbuilder.fetch.common.FetchFailed`),
  retries with exponential backoff, a per-host rate limiter, hashing copies, tool versions;
* :mod:`~dsbuilder.fetch.http`: photos over HTTP with ``requests`` (robots.txt, User-Agent, size cap,
  per-item timeout, truncation checks);
* :mod:`~dsbuilder.fetch.webpage`: the images of an HTML page (``<img src>`` and ``srcset``);
* :mod:`~dsbuilder.fetch.ytdlp`: videos through the yt-dlp Python API;
* :mod:`~dsbuilder.fetch.licence`: licence strings to short codes.

Heavy libraries (requests, yt-dlp, Pillow, PyAV) are imported inside functions.
"""
