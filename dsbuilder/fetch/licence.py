"""Licence strings, as sites and curators write them, to short codes for ``licences.allow``.

Codes:

* Creative Commons families without version: ``CC-BY``, ``CC-BY-SA``, ``CC-BY-ND``, ``CC-BY-NC``,
  ``CC-BY-NC-SA``, ``CC-BY-NC-ND``, and ``CC0``;
* ``public-domain``;
* ``youtube-standard`` for the "Standard YouTube License";
* an SPDX identifier is kept as written, with SPDX's own capitalisation when it is a common one
  (``CC-BY-4.0``, ``MIT``, ``Apache-2.0``);
* ``other`` for prose we cannot read (the raw text is kept beside the code in ``licence_raw``);
* the recipe's ``licences.default`` (``unknown`` unless changed) when there is no licence at all.

Examples::

    >>> normalise_licence("Creative Commons Attribution license (reuse allowed)")
    'CC-BY'
    >>> normalise_licence("https://creativecommons.org/licenses/by-nc-sa/4.0/")
    'CC-BY-NC-SA'
    >>> normalise_licence("public domain")
    'public-domain'
    >>> normalise_licence("cc-by-4.0")
    'CC-BY-4.0'
    >>> normalise_licence(None)
    'unknown'
"""

from __future__ import annotations

import re

#: Our own short codes, matched case-insensitively and returned in this spelling.
CODES = ("CC-BY", "CC-BY-SA", "CC-BY-ND", "CC-BY-NC", "CC-BY-NC-SA", "CC-BY-NC-ND", "CC0",
         "public-domain", "youtube-standard", "other", "unknown")

#: Common SPDX ids, to restore their canonical capitalisation (others are kept as written).
SPDX_IDS = (
    "CC-BY-1.0", "CC-BY-2.0", "CC-BY-2.5", "CC-BY-3.0", "CC-BY-4.0",
    "CC-BY-SA-1.0", "CC-BY-SA-2.0", "CC-BY-SA-2.5", "CC-BY-SA-3.0", "CC-BY-SA-4.0",
    "CC-BY-ND-1.0", "CC-BY-ND-2.0", "CC-BY-ND-2.5", "CC-BY-ND-3.0", "CC-BY-ND-4.0",
    "CC-BY-NC-1.0", "CC-BY-NC-2.0", "CC-BY-NC-2.5", "CC-BY-NC-3.0", "CC-BY-NC-4.0",
    "CC-BY-NC-SA-1.0", "CC-BY-NC-SA-2.0", "CC-BY-NC-SA-2.5", "CC-BY-NC-SA-3.0", "CC-BY-NC-SA-4.0",
    "CC-BY-NC-ND-1.0", "CC-BY-NC-ND-2.0", "CC-BY-NC-ND-2.5", "CC-BY-NC-ND-3.0", "CC-BY-NC-ND-4.0",
    "CC0-1.0", "CC-PDDC", "PDDL-1.0", "ODbL-1.0", "MIT", "Apache-2.0", "BSD-2-Clause",
    "BSD-3-Clause", "GPL-2.0-only", "GPL-3.0-only", "LGPL-3.0-only", "MPL-2.0", "Unlicense",
)
_CANONICAL = {c.lower(): c for c in (*CODES, *SPDX_IDS)}

# A bare token with no spaces, as SPDX ids are (letters, digits, '.', '-', '+').
_TOKEN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")
# Creative Commons licence URLs: creativecommons.org/licenses/by-nc-sa/4.0/
_CC_URL_RE = re.compile(r"creativecommons\.org/licen[cs]es/([a-z-]+)", re.I)
_CC_ZERO_RE = re.compile(r"creativecommons\.org/publicdomain/zero|\bcc0\b|\bcc[- ]zero\b", re.I)
_PD_RE = re.compile(r"public[\s_-]*domain|creativecommons\.org/publicdomain/mark", re.I)
# A bare CC family, as some sites write it: "by", "by-sa", "cc by-nc-nd", "CC-BY-NC 3.0"
_CC_SHORT_RE = re.compile(r"^(?:cc[\s-]*)?(by(?:[\s-]+(?:nc|sa|nd))*)(?:[\s-]+\d(?:\.\d)?)?$", re.I)


def _cc_family(parts: set[str]) -> str:
    """CC flags (``by``, ``sa``, ``nc``, ``nd``) to a family code; NC before SA/ND as in SPDX."""
    code = "CC-BY"
    if "nc" in parts:
        code += "-NC"
    if "sa" in parts:
        code += "-SA"
    elif "nd" in parts:
        code += "-ND"
    return code


def _cc_prose(text: str) -> str | None:
    """Creative Commons licences named in words, e.g. YouTube's 'Creative Commons Attribution ...'."""
    low = text.lower()
    if "creative commons" not in low and not low.startswith(("cc ", "attribution")):
        return None
    parts = {"by"}
    if "noncommercial" in low or "non-commercial" in low or re.search(r"\bnc\b", low):
        parts.add("nc")
    if "sharealike" in low or "share-alike" in low or "share alike" in low \
            or re.search(r"\bsa\b", low):
        parts.add("sa")
    if "noderiv" in low or "no deriv" in low or "no-deriv" in low or re.search(r"\bnd\b", low):
        parts.add("nd")
    return _cc_family(parts)


def normalise_licence(text: str | None, default: str = "unknown") -> str:
    """A short licence code for ``text`` (a site's licence field, a URL, or the curator's words).

    ``default`` is returned when ``text`` is missing or blank (the scrape stage passes the recipe's
    ``licences.default``). See the module docstring for the codes.
    """
    if text is None or not str(text).strip():
        return default
    text = " ".join(str(text).split())
    low = text.lower()
    if low in _CANONICAL:  # one of our codes or a common SPDX id, in any capitalisation
        return _CANONICAL[low]
    if _CC_ZERO_RE.search(text):
        return "CC0"
    m = _CC_URL_RE.search(text)
    if m:
        return _cc_family(set(m.group(1).lower().split("-")))
    if _PD_RE.search(text):
        return "public-domain"
    m = _CC_SHORT_RE.match(text)
    if m:
        return _cc_family(set(re.split(r"[\s-]+", m.group(1).lower())))
    cc = _cc_prose(text)
    if cc:
        return cc
    if "standard youtube licen" in low:
        return "youtube-standard"
    if _TOKEN_RE.match(text):  # looks like an SPDX id we do not list: keep it as written
        return text
    return "other"
