"""Hidden Markov models of a person's action-unit sequences: fit, segment, save, generate.

* :func:`fit` fits a :class:`hmmlearn.hmm.GaussianHMM` (diagonal covariances; or a ``PoissonHMM`` on AU
  values quantised to counts) on all of one person's sequences at once (hmmlearn's ``lengths``). The
  number of states is chosen over a range by BIC (default) or by the log-likelihood of held-out
  sequences, each candidate fitted from several random restarts (seeds ``seed, seed+1, ...``), keeping
  the best training log-likelihood. The same inputs and seed give the same model.
* :func:`save_model` / :func:`load_model` store the parameters as JSON (never pickle).
* :func:`segments` Viterbi-decodes a sequence into runs of one state, each with the state's mean AU
  profile and the nearest FACS emotion of that profile (:mod:`dsbuilder.labels.facs`).
* :func:`sample` generates an AU sequence of a given duration from a fitted model.
* :func:`transition_dot` / :func:`draw_transitions` picture the transition graph (DOT text; PNG drawn with
  matplotlib, no Graphviz needed).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "dsbuilder-hmm/1"


@dataclass
class HmmModel:
    """A fitted model and what it was fitted on."""

    hmm: object  # hmmlearn GaussianHMM or PoissonHMM
    family: str  # gaussian | poisson
    au_names: tuple[str, ...]
    fps: float
    poisson_scale: float = 10.0  # poisson: counts = round(value * scale)
    selection: dict | None = None  # n_states -> score, criterion, ...

    @property
    def n_states(self) -> int:
        return int(self.hmm.n_components)

    def encode(self, X: np.ndarray) -> np.ndarray:
        """AU values -> the model's observation space (counts for poisson)."""
        X = np.nan_to_num(np.asarray(X, dtype=np.float64), nan=0.0)
        if self.family == "poisson":
            return np.round(np.maximum(X, 0.0) * self.poisson_scale).astype(np.int64)
        return X

    def decode_values(self, obs: np.ndarray) -> np.ndarray:
        return obs / self.poisson_scale if self.family == "poisson" else obs

    def state_means(self) -> np.ndarray:
        """(n_states, n_aus) mean AU profile of each state, in AU units."""
        if self.family == "poisson":
            return np.asarray(self.hmm.lambdas_) / self.poisson_scale
        return np.asarray(self.hmm.means_)


def _new(family: str, n: int, seed: int, n_iter: int, X: np.ndarray):
    """An unfitted model. Gaussian: its means start from one k-means run seeded with ``seed`` on
    ``X`` (hmmlearn's own start runs k-means 10 times with one seed, so that restarts with nearby
    seeds mostly began alike, at 10x the cost)."""
    from hmmlearn import hmm

    if family == "gaussian":
        # "scaling": forward-backward with per-frame scaling instead of log-space sums; the same
        # fits here (same log-likelihoods and segments) in 40 % of the time
        m = hmm.GaussianHMM(n_components=n, covariance_type="diag", n_iter=n_iter, tol=1e-4,
                            random_state=seed, min_covar=1e-4, init_params="stmc",
                            implementation="scaling")
        from sklearn.cluster import KMeans

        m.means_ = KMeans(n_clusters=n, n_init=1, random_state=seed).fit(X).cluster_centers_
        m.init_params = "stc"
        return m
    if family == "poisson":
        return hmm.PoissonHMM(n_components=n, n_iter=n_iter, tol=1e-4, random_state=seed)
    raise ValueError(f"unknown HMM family {family!r} (gaussian or poisson)")


def _n_params(model, family: str, d: int) -> int:
    n = model.n_components
    free = (n - 1) + n * (n - 1)
    return free + (n * d * 2 if family == "gaussian" else n * d)


def _fit_one(X, lengths, family, n, seed, restarts, n_iter):
    import logging

    # hmmlearn logs "Model is not converging" for last-iteration wobbles of 1e-6; the restarts and
    # the score comparison below are what matter
    hl = logging.getLogger("hmmlearn.base")
    level = hl.level
    hl.setLevel(logging.ERROR)
    try:
        return _fit_restarts(X, lengths, family, n, seed, restarts, n_iter)
    finally:
        hl.setLevel(level)


def _fit_restarts(X, lengths, family, n, seed, restarts, n_iter):
    best, best_ll = None, -np.inf
    for r in range(restarts):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                m = _new(family, n, seed + r, n_iter, X)
                m.fit(X, lengths)
                ll = m.score(X, lengths)
            except ValueError:  # degenerate start (e.g. too few distinct points): skip this restart
                continue
        if np.isfinite(ll) and ll > best_ll + 1e-9:
            best, best_ll = m, ll
    return best, best_ll


def fit(sequences: list[np.ndarray], au_names, fps: float, n_states: int | tuple[int, int] = (2, 6),
        family: str = "gaussian", criterion: str = "bic", restarts: int = 3, seed: int = 0,
        n_iter: int = 100, poisson_scale: float = 10.0) -> HmmModel:
    """Fit one HMM on all ``sequences`` (each ``(n_i, k)`` AU values, NaN read as 0).

    ``n_states``: a number, or an inclusive ``(min, max)`` range to choose from by ``criterion``:
    ``"bic"`` (lowest Bayesian information criterion on all data) or ``"heldout"`` (highest per-frame
    log-likelihood of every 4th sequence, the model being fitted on the others, then refitted on all;
    needs at least 2 sequences).
    """
    seqs = [np.asarray(s, dtype=np.float64) for s in sequences if len(s)]
    if not seqs:
        raise ValueError("no non-empty AU sequences to fit")
    au_names = tuple(au_names)
    shell = HmmModel(hmm=None, family=family, au_names=au_names, fps=fps, poisson_scale=poisson_scale)
    lo, hi = (n_states, n_states) if isinstance(n_states, int) else n_states
    if lo < 1 or hi < lo:
        raise ValueError(f"bad state range {n_states!r}")
    X = shell.encode(np.concatenate(seqs))
    lengths = [len(s) for s in seqs]
    if criterion == "heldout" and len(seqs) < 2 and lo != hi:
        raise ValueError("criterion 'heldout' needs at least 2 sequences")
    scores: dict[int, float] = {}
    on_all: dict[int, tuple] = {}  # BIC fits are on all the data: the winner needs no refit
    for n in range(lo, hi + 1):
        if n > len(X):
            break
        if lo == hi:
            scores[n] = 0.0
        elif criterion == "bic":
            m, ll = on_all[n] = _fit_one(X, lengths, family, n, seed, restarts, n_iter)
            if m is not None:
                scores[n] = float(-2 * ll + _n_params(m, family, X.shape[1]) * np.log(len(X)))
        elif criterion == "heldout":
            test = [i for i in range(len(seqs)) if i % 4 == 3] or [len(seqs) - 1]
            train = [i for i in range(len(seqs)) if i not in test]
            Xtr = shell.encode(np.concatenate([seqs[i] for i in train]))
            m, _ = _fit_one(Xtr, [lengths[i] for i in train], family, n, seed, restarts, n_iter)
            if m is not None:
                Xte = shell.encode(np.concatenate([seqs[i] for i in test]))
                scores[n] = float(-m.score(Xte, [lengths[i] for i in test]) / len(Xte))
        else:
            raise ValueError(f"unknown criterion {criterion!r} (bic or heldout)")
    if not scores:
        raise ValueError("no candidate model could be fitted")
    best_n = min(scores, key=lambda k: (scores[k], k))
    model, ll = on_all.get(best_n) or _fit_one(X, lengths, family, best_n, seed, restarts, n_iter)
    if model is None:
        raise ValueError(f"fitting {best_n} states failed on every restart")
    shell.hmm = model
    shell.selection = {"criterion": criterion if lo != hi else "fixed", "scores": scores,
                       "n_states": best_n, "loglik": float(ll), "n_frames": int(len(X)),
                       "n_sequences": len(seqs), "seed": seed, "restarts": restarts}
    return shell


# --- persistence ---------------------------------------------------------------------------------

def model_to_dict(model: HmmModel) -> dict:
    h = model.hmm
    d = {"format": FORMAT, "family": model.family, "au_names": list(model.au_names),
         "fps": model.fps, "n_states": model.n_states, "poisson_scale": model.poisson_scale,
         "startprob": h.startprob_.tolist(), "transmat": h.transmat_.tolist(),
         "selection": {**(model.selection or {}),
                       "scores": {str(k): v for k, v in (model.selection or {}).get("scores",
                                                                                   {}).items()}}}
    if model.family == "gaussian":
        d["covariance_type"] = "diag"
        d["means"] = h.means_.tolist()
        d["covars"] = np.asarray(h._covars_).tolist()  # (n, k) diagonal variances
    else:
        d["lambdas"] = h.lambdas_.tolist()
    return d


def model_from_dict(d: dict) -> HmmModel:
    from hmmlearn import hmm

    if d.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} model file (format={d.get('format')!r})")
    n, k = int(d["n_states"]), len(d["au_names"])
    if d["family"] == "gaussian":
        h = hmm.GaussianHMM(n_components=n, covariance_type="diag")
        h.n_features = k
        h.means_ = np.array(d["means"], dtype=np.float64)
        h.covars_ = np.array(d["covars"], dtype=np.float64)
    elif d["family"] == "poisson":
        h = hmm.PoissonHMM(n_components=n)
        h.n_features = k
        h.lambdas_ = np.array(d["lambdas"], dtype=np.float64)
    else:
        raise ValueError(f"unknown HMM family {d['family']!r}")
    h.startprob_ = np.array(d["startprob"], dtype=np.float64)
    h.transmat_ = np.array(d["transmat"], dtype=np.float64)
    sel = dict(d.get("selection") or {})
    if "scores" in sel:
        sel["scores"] = {int(a): b for a, b in sel["scores"].items()}
    return HmmModel(hmm=h, family=d["family"], au_names=tuple(d["au_names"]), fps=float(d["fps"]),
                    poisson_scale=float(d.get("poisson_scale", 10.0)), selection=sel)


def save_model(model: HmmModel, path: str | Path) -> Path:
    """Write the model as JSON (atomically)."""
    from dsbuilder.workspace import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, (json.dumps(model_to_dict(model), indent=1, sort_keys=True) + "\n")
                       .encode())
    return path


def load_model(path: str | Path) -> HmmModel:
    return model_from_dict(json.loads(Path(path).read_text()))


# --- decoding and generation ---------------------------------------------------------------------

@dataclass(frozen=True)
class Segment:
    start: int  # index into the sequence, inclusive
    end: int  # exclusive
    state: int
    profile: tuple[float, ...]  # the state's mean AU values
    emotion: str
    emotion_score: float


def decode(model: HmmModel, X: np.ndarray, min_run: int = 1) -> np.ndarray:
    """Viterbi state path of one sequence; with ``min_run > 1`` the most likely path under the
    model among those whose every run of one state lasts at least ``min_run`` frames
    (:func:`viterbi_min_run`)."""
    obs = model.encode(X)
    if min_run <= 1:
        _, states = model.hmm.decode(obs, algorithm="viterbi")
        return states
    loglik = model.hmm._compute_log_likelihood(obs)  # (T, K) log p(x_t | state k)
    with np.errstate(divide="ignore"):
        return viterbi_min_run(np.log(model.hmm.startprob_), np.log(model.hmm.transmat_), loglik,
                               min_run)


def viterbi_min_run(log_start: np.ndarray, log_trans: np.ndarray, loglik: np.ndarray,
                    min_run: int) -> np.ndarray:
    """Minimum-duration Viterbi: the MAP state path of an HMM (log start, log transition and
    per-frame log emission probabilities) subject to every run -- the first and the last
    included -- lasting at least ``min_run`` frames. A sequence shorter than that is one run.

    The search runs on an expanded state space ``(k, d)``: state ``k`` held for ``d + 1`` frames,
    ``d`` capped at ``D - 1`` (``D = min_run``). Staying in ``k`` costs ``log a_kk`` as in the model;
    leaving ``k`` for ``j`` (``log a_kj``) is allowed only from ``(k, D - 1)``. So the path's score is
    the model's own log-probability of it, and the constraint only removes paths. Time
    O(T K (D + K)), memory O(T K D) small integers.
    """
    loglik = np.asarray(loglik, np.float64)
    T, K = loglik.shape
    D = max(1, int(min_run))
    if T == 0:
        return np.zeros(0, np.int64)
    if T < D or K == 1:  # one run: the best single state for the whole sequence
        score = log_start + loglik.sum(axis=0) + (T - 1) * np.diag(log_trans)
        return np.full(T, int(np.argmax(score)), np.int64)
    stay = np.diag(log_trans).copy()
    switch = log_trans.copy()
    np.fill_diagonal(switch, -np.inf)
    delta = np.full((K, D), -np.inf)
    delta[:, 0] = log_start + loglik[0]
    entry_from = np.zeros((T, K), np.int64)  # (k, 0) at t entered from (entry_from, D-1) at t-1
    held_from_full = np.zeros((T, K), bool)  # (k, D-1) at t came from (k, D-1), not (k, D-2)
    for t in range(1, T):
        new = np.full((K, D), -np.inf)
        cand = delta[:, D - 1][:, None] + switch  # (from j, to k)
        entry_from[t] = np.argmax(cand, axis=0)
        new[:, 0] = cand[entry_from[t], np.arange(K)]
        if D > 1:
            new[:, 1:] = delta[:, :-1] + stay[:, None]
            full = delta[:, D - 1] + stay
            held_from_full[t] = full > new[:, D - 1]
            new[:, D - 1] = np.maximum(new[:, D - 1], full)
        else:
            full = delta[:, 0] + stay
            held_from_full[t] = full > new[:, 0]
            new[:, 0] = np.maximum(new[:, 0], full)
        delta = new + loglik[t][:, None]
    k, d = int(np.argmax(delta[:, D - 1])), D - 1
    path = np.empty(T, np.int64)
    for t in range(T - 1, -1, -1):
        path[t] = k
        if t == 0:
            break
        if d == D - 1 and held_from_full[t, k]:
            continue
        if d == 0:
            k, d = int(entry_from[t, k]), D - 1
        else:
            d -= 1
    return path


def state_emotions(model: HmmModel) -> list[tuple[str, float]]:
    from dsbuilder.labels.facs import nearest_emotion

    return [nearest_emotion(m, model.au_names) for m in model.state_means()]


def runs(states: np.ndarray) -> list[tuple[int, int, int]]:
    """``[(start, end_exclusive, state), ...]`` of constant runs."""
    states = np.asarray(states)
    if not len(states):
        return []
    cuts = np.flatnonzero(np.diff(states)) + 1
    starts = np.r_[0, cuts]
    ends = np.r_[cuts, len(states)]
    return [(int(a), int(b), int(states[a])) for a, b in zip(starts, ends)]


def segments(model: HmmModel, X: np.ndarray, min_run: int = 1) -> list[Segment]:
    """Viterbi-decode one AU sequence into :class:`Segment` runs of at least ``min_run`` frames
    (shorter only when the whole sequence is)."""
    means = model.state_means()
    emos = state_emotions(model)
    return [Segment(a, b, s, tuple(float(v) for v in means[s]), emos[s][0], float(emos[s][1]))
            for a, b, s in runs(decode(model, X, min_run))]


def sample(model: HmmModel, seconds: float, fps: float | None = None,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``seconds`` of AU values at ``fps`` (default: the model's): ``(values (n, k), states)``.
    Gaussian samples are clipped below at 0 (intensities are never negative)."""
    fps = fps or model.fps
    n = max(1, int(round(seconds * fps)))
    obs, states = model.hmm.sample(n, random_state=seed)
    vals = model.decode_values(np.asarray(obs, dtype=np.float64))
    return np.maximum(vals, 0.0), np.asarray(states)


# --- transition graph -----------------------------------------------------------------------------

def _labels(model: HmmModel) -> list[str]:
    return [f"S{i}\\n{e}" for i, (e, _) in enumerate(state_emotions(model))]


def transition_dot(model: HmmModel, min_prob: float = 0.01) -> str:
    """Graphviz DOT text of the transition graph (edges with probability >= ``min_prob``)."""
    lines = ["digraph hmm {", "  rankdir=LR;", "  node [shape=ellipse];"]
    for i, lab in enumerate(_labels(model)):
        lines.append(f'  S{i} [label="{lab}\\np0={model.hmm.startprob_[i]:.2f}"];')
    T = model.hmm.transmat_
    for i in range(model.n_states):
        for j in range(model.n_states):
            if T[i, j] >= min_prob:
                lines.append(f'  S{i} -> S{j} [label="{T[i, j]:.2f}", penwidth={0.5 + 3 * T[i, j]:.2f}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw_transitions(model: HmmModel, path: str | Path, min_prob: float = 0.01) -> Path:
    """PNG of the transition graph drawn with matplotlib (states on a circle; arrow width ~ p)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch

    from dsbuilder.workspace import atomic_path

    n = model.n_states
    ang = np.pi / 2 - 2 * np.pi * np.arange(n) / n
    pos = np.stack([np.cos(ang), np.sin(ang)], axis=1) * (0 if n == 1 else 1)
    T = model.hmm.transmat_
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    for i in range(n):
        for j in range(n):
            p = T[i, j]
            if p < min_prob:
                continue
            if i == j:
                out = pos[i] * 1.35 if n > 1 else np.array([0, 0.35])
                ax.annotate(f"{p:.2f}", out, ha="center", va="center", fontsize=8, color="0.3")
                continue
            arr = FancyArrowPatch(pos[i], pos[j], connectionstyle="arc3,rad=0.15", arrowstyle="-|>",
                                  mutation_scale=14, lw=0.5 + 4 * p, color="tab:blue", alpha=0.8,
                                  shrinkA=22, shrinkB=22)
            ax.add_patch(arr)
            mid = (pos[i] + pos[j]) / 2 + 0.12 * np.array([-(pos[j] - pos[i])[1], (pos[j] - pos[i])[0]])
            ax.annotate(f"{p:.2f}", mid, ha="center", va="center", fontsize=8)
    for i, lab in enumerate(_labels(model)):
        ax.add_patch(plt.Circle(pos[i], 0.2, color="white", ec="black", zorder=3))
        ax.annotate(lab.replace("\\n", "\n"), pos[i], ha="center", va="center", fontsize=8, zorder=4)
    ax.set_xlim(-1.6, 1.6)
    ax.set_ylim(-1.6, 1.6)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"HMM transitions ({model.family}, {n} states)")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
