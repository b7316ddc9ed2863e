"""Load and validate a YAML recipe against :mod:`dsbuilder.config`.

Errors name the file, the YAML line and the allowed values. Relative paths in a recipe are relative to
the recipe file's folder.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsbuilder import config
from dsbuilder.config import Param
from dsbuilder.errors import RecipeError

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_URL_RE = re.compile(r"^(https?|ftp)://", re.I)
# yt-dlp search prefixes: ytsearch5:, ytsearchall:, ytsearchdate10:, scsearch3: ...
_SEARCH_RE = re.compile(r"^[a-z]+search(\d+|all|date\d*)?:", re.I)


@dataclass(frozen=True)
class SourceSpec:
    """One entry of a person's ``photos`` or ``videos`` list, as the curator wrote it."""

    kind: str  # "photo" or "video"
    ref: str  # URL, search query, or absolute local path
    ref_type: str  # "url", "search" or "path"
    person_id: str
    licence: str | None = None
    line: int | None = None
    split: str | None = None  # a video entry held in this split (config.SPLITS); None: by hash

    @property
    def spec_id(self) -> str:
        """A stable id of this request (not of its content, which is unknown before fetching)."""
        return "req-" + hashlib.sha256(f"{self.kind}\0{self.ref}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    photos: tuple[SourceSpec, ...]
    videos: tuple[SourceSpec, ...]


@dataclass
class Recipe:
    path: Path
    name: str
    workspace: Path
    people: list[Person]
    licences: dict[str, Any]
    limits: dict[str, Any]
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=lambda: {k: p.default
                                                         for k, p in config.RUN.items()})

    @property
    def executor(self):
        """The ``run:`` section as an :class:`~dsbuilder.executors.ExecutorConfig`."""
        from dsbuilder.executors import ExecutorConfig

        return ExecutorConfig(kind=self.run["executor"], jobs=int(self.run["jobs"]),
                              ray_address=self.run["ray_address"])

    def sources(self) -> list[SourceSpec]:
        """All source entries in recipe order (people order, photos before videos)."""
        out: list[SourceSpec] = []
        for p in self.people:
            out.extend(p.photos)
            out.extend(p.videos)
        return out

    def stage_params(self, stage: str) -> dict[str, Any]:
        """The parameters that decide a stage's output: its own map plus the sections it reads."""
        params = dict(self.stages[stage])
        if stage == "scrape":
            params["limits"] = dict(self.limits)
            params["licences"] = dict(self.licences)
        pins = self.split_pins() if stage == "report" else None
        if pins:
            params["split_pins"] = pins
        return params

    def split_pins(self) -> dict[str, str]:
        """Recipe entry (``SourceSpec.spec_id``) -> the split its videos are held in."""
        return {s.spec_id: s.split for s in self.sources() if s.split}

    def effective(self) -> dict[str, Any]:
        """The full configuration after defaults, as ``dsbuilder recipe show`` prints it."""
        def spec(s: SourceSpec) -> Any:
            if not (s.licence or s.split):
                return s.ref
            return {"url" if s.ref_type != "path" else "path": s.ref,
                    **({"licence": s.licence} if s.licence else {}),
                    **({"split": s.split} if s.split else {})}
        return {
            "name": self.name,
            "workspace": str(self.workspace),
            "people": [
                {"id": p.id, "name": p.name, "photos": [spec(s) for s in p.photos],
                 "videos": [spec(s) for s in p.videos]}
                for p in self.people
            ],
            "licences": self.licences,
            "limits": self.limits,
            "run": self.run,
            "stages": self.stages,
        }


def _located(sm: dict, stage: str) -> dict:
    """A stage's section as written (keys -> located values), {} when absent."""
    return sm[stage].value if stage in sm and isinstance(sm[stage].value, dict) else {}


def _resolve_path(v: "_Validator", sm: dict, stages: dict, stage: str, key: str, base: Path,
                  hint: str) -> None:
    """A path parameter: relative to the recipe's folder, made absolute; it must exist."""
    if stages[stage][key] is None:
        return
    p = Path(stages[stage][key]).expanduser()
    p = (p if p.is_absolute() else base / p).resolve()
    if not p.exists():
        loc = _located(sm, stage).get(key)
        v.fail(f"stages.{stage}.{key} does not exist: {p}", loc.line if loc else None, hint)
    stages[stage][key] = str(p)


def params_hash(params: dict[str, Any]) -> str:
    """Stable short hash of a parameter map (key order does not matter)."""
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- YAML with line numbers -------------------------------------------------------------------

class _Located:
    """A parsed YAML value plus the line it started on."""

    __slots__ = ("value", "line", "key_line")

    def __init__(self, value: Any, line: int):
        self.value = value
        self.line = line
        self.key_line = line  # for a mapping value: the line of its key


def _compose(path: Path) -> _Located:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError("recipe file not found", "check the path, e.g. recipes/demo.yaml",
                          path=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read recipe: {exc}", "is it a UTF-8 text file?",
                          path=str(path)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RecipeError(f"YAML syntax error: {getattr(exc, 'problem', exc)}",
                          "fix the indentation or quoting on that line", path=str(path),
                          line=mark.line + 1 if mark else None) from None
    if node is None:
        raise RecipeError("recipe is empty", "start from recipes/demo.yaml", path=str(path))
    return _convert(node, path)


def _convert(node: Any, path: Path) -> _Located:
    import yaml

    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, _Located] = {}
        for k, v in node.value:
            key = str(k.value)
            if key in out:  # YAML loaders keep the last silently: half a section would vanish
                raise RecipeError(f"key {key!r} appears twice in one mapping (first on line "
                                  f"{out[key].key_line})", "merge the two into one",
                                  path=str(path), line=k.start_mark.line + 1)
            item = _convert(v, path)
            item.key_line = k.start_mark.line + 1
            out[key] = item
        return _Located(out, line)
    if isinstance(node, yaml.SequenceNode):
        return _Located([_convert(v, path) for v in node.value], line)
    loader = yaml.SafeLoader("")
    try:
        return _Located(loader.construct_object(node, deep=True), line)
    finally:
        loader.dispose()


def _plain(loc: _Located) -> Any:
    v = loc.value
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


# --- validation ---------------------------------------------------------------------------------

class _Validator:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, message: str, line: int | None, hint: str | None = None) -> None:
        raise RecipeError(message, hint, path=str(self.path), line=line)

    def mapping(self, loc: _Located, where: str) -> dict[str, _Located]:
        if not isinstance(loc.value, dict):
            self.fail(f"{where} must be a mapping, got {type(loc.value).__name__}", loc.line)
        return loc.value

    def keys(self, m: dict[str, _Located], allowed: tuple[str, ...] | list[str], where: str) -> None:
        for key, loc in m.items():
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else None
                self.fail(f"unknown key {key!r} in {where}; allowed: {', '.join(allowed)}",
                          loc.key_line, hint)

    def param(self, name: str, p: Param, loc: _Located | None, where: str) -> Any:
        if loc is None:
            return p.default
        v = loc.value
        if v is None:
            if p.nullable or p.default is None:
                return None
            self.fail(f"{where}.{name} may not be null; expected {p.describe()}", loc.line)
        types = p.type if isinstance(p.type, tuple) else (p.type,)
        ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in types)
        if not ok:
            self.fail(f"{where}.{name} must be {p.describe()}, got {v!r}", loc.line,
                      f"{name}: {p.help}")
        if p.choices and v not in p.choices:
            close = difflib.get_close_matches(str(v), [str(c) for c in p.choices], n=1)
            self.fail(f"{where}.{name} must be {p.describe()}, got {v!r}", loc.line,
                      f"did you mean {close[0]!r}?" if close else None)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if (p.min is not None and v < p.min) or (p.max is not None and v > p.max):
                self.fail(f"{where}.{name} must be {p.describe()}, got {v!r}", loc.line)
        if isinstance(v, list):
            return [_plain(x) for x in v]
        return v

    def section(self, loc: _Located | None, params: dict[str, Param], where: str) -> dict[str, Any]:
        m = {} if loc is None or loc.value is None else self.mapping(loc, where)
        self.keys(m, list(params), where)
        return {name: self.param(name, p, m.get(name), where) for name, p in params.items()}


def _source(v: _Validator, loc: _Located, kind: str, person_id: str, base: Path,
            where: str) -> SourceSpec:
    licence = split = None
    if isinstance(loc.value, dict):
        m = loc.value
        v.keys(m, config.SOURCE_KEYS, where)
        refs = [k for k in ("url", "path") if k in m]
        if len(refs) != 1:
            v.fail(f"{where} needs exactly one of 'url' or 'path'", loc.line)
        ref_loc = m[refs[0]]
        if not isinstance(ref_loc.value, str) or not ref_loc.value.strip():
            v.fail(f"{where}.{refs[0]} must be a non-empty string", ref_loc.line)
        ref = ref_loc.value.strip()
        if "licence" in m:
            if not isinstance(m["licence"].value, str):
                v.fail(f"{where}.licence must be a string", m["licence"].line)
            licence = m["licence"].value
        if "split" in m:
            split = m["split"].value
            if kind != "video" or split not in config.SPLITS:
                v.fail(f"{where}.split must be one of {', '.join(config.SPLITS)} (videos only), "
                       f"got {split!r}", m["split"].line,
                       "leave it out to let the hash of the video's group choose")
        forced_path = refs[0] == "path"
    elif isinstance(loc.value, str) and loc.value.strip():
        ref = loc.value.strip()
        forced_path = False
    else:
        v.fail(f"{where} must be a URL, a search like 'ytsearch5:NAME interview', a local path, "
               f"or a mapping with url/path and licence; got {loc.value!r}", loc.line)
        raise AssertionError  # unreachable
    if not forced_path and _URL_RE.match(ref):
        ref_type = "url"
    elif not forced_path and _SEARCH_RE.match(ref):
        ref_type = "search"
        if kind == "photo":
            v.fail(f"{where}: searches are for videos only, got {ref!r}", loc.line,
                   "list photo URLs, an HTML page URL, or a local folder")
    else:
        p = Path(ref).expanduser()
        p = p if p.is_absolute() else (base / p)
        p = p.resolve()
        if not p.exists():
            v.fail(f"{where}: local path does not exist: {p}", loc.line,
                   "fix the path (relative paths are relative to the recipe file)"
                   + ("; for the demo run 'dsbuilder demo' first" if "demo-media" in ref else ""))
        ref, ref_type = str(p), "path"
    return SourceSpec(kind=kind, ref=ref, ref_type=ref_type, person_id=person_id,
                      licence=licence, line=loc.line, split=split)


def load_recipe(path: str | Path, workspace: str | Path | None = None) -> Recipe:
    """Parse, validate and fill defaults. ``workspace`` overrides the recipe's own."""
    path = Path(path)
    root = _compose(path)
    v = _Validator(path)
    top = v.mapping(root, "recipe")
    v.keys(top, config.TOP_LEVEL, "recipe")
    base = path.resolve().parent

    name_loc = top.get("name")
    if name_loc is None or not isinstance(name_loc.value, str) or not _ID_RE.match(name_loc.value):
        v.fail("recipe 'name' must be a lowercase id (letters, digits, '-', '_')",
               name_loc.line if name_loc else root.line, "e.g. name: my-dataset")
    name = name_loc.value

    if workspace is not None:
        ws = Path(workspace).resolve()
    elif "workspace" in top:
        wl = top["workspace"]
        if not isinstance(wl.value, str):
            v.fail("'workspace' must be a path string", wl.line)
        ws = Path(wl.value).expanduser()
        ws = (ws if ws.is_absolute() else base / ws).resolve()
    else:
        ws = (Path.cwd() / "workspaces" / name).resolve()

    people_loc = top.get("people")
    if people_loc is None or not isinstance(people_loc.value, list) or not people_loc.value:
        v.fail("recipe needs a non-empty 'people' list", people_loc.line if people_loc else None,
               "each person: {id, name, photos: [...], videos: [...]}")
    people: list[Person] = []
    seen: set[str] = set()
    pins: dict[str, SourceSpec] = {}
    for i, ploc in enumerate(people_loc.value):
        where = f"people[{i}]"
        m = v.mapping(ploc, where)
        v.keys(m, config.PERSON_KEYS, where)
        pid_loc = m.get("id")
        if pid_loc is None or not isinstance(pid_loc.value, str) or not _ID_RE.match(pid_loc.value):
            v.fail(f"{where}.id must be a lowercase id (letters, digits, '-', '_')",
                   pid_loc.line if pid_loc else ploc.line)
        pid = pid_loc.value
        if pid in seen:
            v.fail(f"{where}.id {pid!r} is used twice", pid_loc.line)
        seen.add(pid)
        pname = m["name"].value if "name" in m else pid
        if not isinstance(pname, str):
            v.fail(f"{where}.name must be a string", m["name"].line)
        lists = {}
        for key, kind in (("photos", "photo"), ("videos", "video")):
            lloc = m.get(key)
            items = [] if lloc is None or lloc.value is None else lloc.value
            if not isinstance(items, list):
                v.fail(f"{where}.{key} must be a list", lloc.line)
            lists[key] = tuple(_source(v, s, kind, pid, base, f"{where}.{key}[{j}]")
                               for j, s in enumerate(items))
        people.append(Person(pid, pname, lists["photos"], lists["videos"]))
        for spec in lists["videos"]:  # the same video entry listed twice must pin one split
            other = pins.setdefault(spec.spec_id, spec)
            if spec.split != other.split and spec.split and other.split:
                v.fail(f"{spec.ref} is held in split {other.split} on line {other.line} and in "
                       f"split {spec.split} here", spec.line, "give both entries the same split")

    licences = v.section(top.get("licences"), config.LICENCES, "licences")
    if licences["allow"] is not None and not all(isinstance(x, str) for x in licences["allow"]):
        v.fail("licences.allow must be a list of strings", top["licences"].line)
    limits = v.section(top.get("limits"), config.LIMITS, "limits")
    run = v.section(top.get("run"), config.RUN, "run")
    stages_loc = top.get("stages")
    sm = {} if stages_loc is None or stages_loc.value is None else v.mapping(stages_loc, "stages")
    v.keys(sm, list(config.STAGE_PARAMS), "stages")
    stages = {s: v.section(sm.get(s), ps, f"stages.{s}") for s, ps in config.STAGE_PARAMS.items()}
    lab = stages["label"]
    lab_loc = _located(sm, "label")
    if lab["hmm_min_states"] > lab["hmm_max_states"]:
        v.fail(f"stages.label.hmm_min_states ({lab['hmm_min_states']}) is larger than "
               f"hmm_max_states ({lab['hmm_max_states']})",
               lab_loc["hmm_min_states"].line if "hmm_min_states" in lab_loc else None)
    _resolve_path(v, sm, stages, "label", "au_csv", base,
                  "give a folder of <track_id>.csv files or one CSV, relative to the recipe")
    _resolve_path(v, sm, stages, "report", "review", base,
                  "give a CSV with clip_id, decision and note columns, relative to the recipe")
    return Recipe(path=path.resolve(), name=name, workspace=ws, people=people, licences=licences,
                  limits=limits, stages=stages, run=run)
