"""What a project's corrections feed back into training (``project.feedback``, a
:class:`Feedback`).

Training cases built from the corrected masks (optionally weighted to the edited / reviewed
pixels), replay cases from uncorrected predictions (forgetting guard), the persisted hold-out
split, and how much the user had to fix per case and per model version.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from .store import ManifestStore, is_corrected

if TYPE_CHECKING:
    from ..train.dataset import Case
    from .cases import CaseRecord


#: With ``holdout=None`` one corrected case in this many is held back (at least one): one
#: held-back case is a noisy judge (ISIC loop, 50-100 corrected: it advised against rounds that
#: gained on the test images; a fifth held back advised right in 3 of 3, docs/results.md).
HOLDOUT_SHARE = 5


def auto_holdout(corrected: int) -> int:
    """How many of ``corrected`` cases the default round holds back to judge on."""
    return max(1, corrected // HOLDOUT_SHARE)


class Feedback:
    """Training data, hold-out split and fix statistics of one project.

    Parameters
    ----------
    store : ManifestStore
        The project's manifest.
    load_case : callable
        ``load_case(name)`` returns the stored case (image, prediction, correction, edits).
    """

    def __init__(self, store: ManifestStore, load_case: Callable[[str], CaseRecord]) -> None:
        self._store = store
        self._load_case = load_case

    def _corrected(self) -> list[str]:
        return [n for n, e in self._store.manifest["cases"].items() if is_corrected(e)]

    def corrected_cases(self, only_weighted: bool = False, names: Iterable[str] | None = None,
                        exclude: Iterable[str] = ()) -> list[Case]:
        """Training cases built from the corrected masks.

        Parameters
        ----------
        only_weighted : bool
            If true, ``weight`` is 1 only on edited pixels and reviewed slices, so untouched
            model output does not count as ground truth.
        names : iterable of str, optional
            Restrict to these cases (default: every corrected case).
        exclude : iterable of str
            Cases to leave out (e.g. the held-back ones).
        """
        from ..train.dataset import Case

        skip = set(exclude)
        entries = self._store.manifest["cases"]
        chosen = [n for n in (entries if names is None else names)
                  if n not in skip and is_corrected(entries[n])]
        out = []
        for n in chosen:
            rec = self._load_case(n)
            weight = None
            if only_weighted and not rec.reviewed_all:
                weight = (rec.edited | rec.reviewed_map).astype(np.float32)
            out.append(Case(name=n, image=rec.image, label=rec.correction.astype(np.int64),
                            mask=None, weight=weight,
                            meta={"model_version": rec.meta.get("model_version")}))
        return out

    def replay_cases(self, limit: int = 8) -> list[Case]:
        """Uncorrected cases labelled with their stored prediction (forgetting-guard replay)."""
        from ..train.dataset import Case

        out = []
        for n in self.uncorrected_cases()[: max(0, int(limit))]:
            rec = self._load_case(n)
            out.append(Case(name=n, image=rec.image, label=rec.prediction.astype(np.int64),
                            meta={"pseudo_label": True}))
        return out

    def uncorrected_cases(self) -> list[str]:
        """Cases the user has not edited nor reviewed yet."""
        return [n for n, e in self._store.manifest["cases"].items() if not is_corrected(e)]

    def fix_stats(self) -> dict[str, list[dict[str, Any]]]:
        """How much the user had to fix: per case (current round) and per model version.

        ``rounds`` lists, in version order, the mean ``fix_dice`` (Dice between prediction and
        correction; 1 = nothing to fix) and mean changed fraction of the corrected cases
        predicted by each version, including earlier rounds kept in the case histories.
        """
        manifest = self._store.manifest
        per_case, pool = [], {}
        for name, e in manifest["cases"].items():
            corrected = is_corrected(e)
            per_case.append({"case": name, "model_version": e["model_version"],
                             "fix_dice": e["fix_dice"], "changed_fraction": e["changed_fraction"],
                             "edited_fraction": e["edited_fraction"],
                             "reviewed": bool(e["reviewed_all"] or e["reviewed_slices"]),
                             "corrected": corrected})
            rounds = list(e["history"])
            if corrected:
                rounds.append(e)
            for r in rounds:
                pool.setdefault(r["model_version"], []).append(r)
        order = [v["id"] for v in manifest["versions"]]
        keys = sorted(pool, key=lambda k: order.index(k) if k in order else -1)
        rounds_out = [{"model_version": k, "n_cases": len(pool[k]),
                       "mean_fix_dice": float(np.mean([r["fix_dice"] for r in pool[k]])),
                       "mean_changed_fraction": float(np.mean([r["changed_fraction"]
                                                               for r in pool[k]]))}
                      for k in keys]
        return {"cases": per_case, "rounds": rounds_out}

    def plan_holdout(self, k: int | None = 1, seed: int = 0) -> tuple[list[str], list[str]]:
        """The split :meth:`split_holdout` would make now, without persisting it."""
        corrected = self._corrected()
        hold = [n for n in self._store.manifest["holdout"] if n in corrected]
        k = auto_holdout(len(corrected)) if k is None else int(k)
        k = max(0, min(k, len(corrected) - 1))
        rest = [n for n in corrected if n not in hold]
        rng = random.Random(seed + len(corrected))
        while len(hold) < k and rest:
            hold.append(rest.pop(rng.randrange(len(rest))))
        if len(hold) > max(k, 0) and len(corrected) - len(hold) < 1:
            hold = hold[: len(corrected) - 1]
        return [n for n in corrected if n not in hold], hold

    def split_holdout(self, k: int | None = 1, seed: int = 0) -> tuple[list[str], list[str]]:
        """Choose (and persist) ``k`` corrected cases held back from training (None:
        :func:`auto_holdout` of the number corrected).

        Already held-back cases stay held back so that later rounds are compared on data no
        version was trained on. At least one corrected case is always left for training.
        Returns ``(train_names, holdout_names)``.
        """
        with self._store.locked() as m:
            train, hold = self.plan_holdout(k, seed)
            if hold != m["holdout"]:
                with self._store.edit() as changed:
                    changed["holdout"] = hold
        return train, hold

    @property
    def holdout(self) -> list[str]:
        """Names of the held-back cases."""
        return list(self._store.manifest["holdout"])
