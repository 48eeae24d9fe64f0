"""The models a server holds: each run directory loaded once, named, and described for ``GET /api/models``.
A run that fails to load is listed with its error instead of stopping the server (unless none loads)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from undiffuse.data.kinds import KINDS
from undiffuse.errors import UserError
from undiffuse.model import Model, load
from undiffuse.samplers import registry
from undiffuse.serve.limits import Limits, ServeError

__all__ = ["Served", "Catalog", "formats_of", "samplers_for", "editable", "EDITABLE"]

#: kinds the edit endpoint (inpainting, SDEdit) accepts
EDITABLE = ("image",)


@dataclass
class Served:
    """One served run: its name, directory, the loaded model or the one-line reason it did not load."""

    name: str
    run_dir: Path
    model: Optional[Model] = None
    error: Optional[str] = None


def formats_of(kind: str) -> list[str]:
    """The response formats of a kind: its writers' suffixes (a directory of files is not a response)."""
    return [t.lstrip(".") for t in KINDS[kind].writers if t != "dir"]


def editable(model: Model) -> bool:
    """Whether the edit endpoint takes this model: an image run that is not a super-resolution one."""
    return model.data.kind in EDITABLE and not model.config.model.sr_from


def _unique_names(dirs: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for d in dirs:
        base = d.resolve().name or "model"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _sampler_options(name: str) -> dict:
    spec = registry.spec(name)
    return {"name": name, "grid": spec.grid, "options": {k: v for k, v in spec.options.items() if k == "eta"}}


def _own_sampling(model: Model) -> tuple[str, int]:
    """The run's own sampler and steps (its config's ``sample`` section, whose defaults ddim, 50 older runs
    read; a table's multinomial sampler)."""
    if model.data.kind == "table":
        from undiffuse.tables import TABLE_STEPS

        return "multinomial", TABLE_STEPS
    return model.config.sample.sampler, model.config.sample.steps


def samplers_for(model: Model) -> list[str]:
    """The samplers that can drive this model: those whose callable is of the kind its own sampler takes
    (a denoiser D(x; σ), a distilled student's consistency function, a table's mixed-row denoiser)."""
    want = registry.spec(_own_sampling(model)[0]).model
    return [name for name, spec in registry.SPECS.items() if spec.model == want]


class Catalog:
    """Name → :class:`Served`, in the order given."""

    def __init__(self, runs: Sequence[Union[str, os.PathLike]], device: Optional[str] = None) -> None:
        dirs = [Path(r) for r in runs]
        if not dirs:
            raise UserError("no run to serve — give one or more run directories: undiffuse serve runs/fm")
        self.entries: dict[str, Served] = {}
        for name, d in zip(_unique_names(dirs), dirs):
            entry = Served(name, d)
            try:
                entry.model = load(d, device=device)
            except UserError as e:  # a broken run is listed with its error; the others are served
                entry.error = str(e)
            self.entries[name] = entry
        if not any(e.model is not None for e in self.entries.values()):
            first = next(iter(self.entries.values()))
            raise UserError(f"no run could be loaded ({first.run_dir}: {first.error})")

    def model(self, name: Any) -> Model:
        """The loaded model called ``name`` (404 for an unknown name, 503 for a run that did not load)."""
        entry = self.entries.get(name) if isinstance(name, str) else None
        if entry is None:
            raise ServeError(f"unknown model {str(name)[:80]!r} — choose one of {', '.join(self.entries)} "
                             "(GET /api/models)", status=404)  # fmt: skip
        if entry.model is None:
            raise ServeError(f"model {name!r} did not load ({entry.error}) — fix the run and restart", status=503)
        return entry.model

    def describe(self, limits: Limits) -> list[dict]:
        """What ``GET /api/models`` lists: kind, shape, conditioning, samplers and options, formats, limits."""
        return [self._describe(e, limits) for e in self.entries.values()]

    def _describe(self, e: Served, limits: Limits) -> dict:
        if e.model is None:
            return {"name": e.name, "ok": False, "error": e.error}
        m, cfg = e.model, e.model.config.model
        classes = m.data.num_classes if cfg.class_cond else None
        names = list(m.data.class_names or []) if classes else None
        sampler, steps = _own_sampling(m)
        return {
            "name": e.name, "ok": True, "kind": m.data.kind, "data": m.data.name, "shape": list(m.data.shape),
            "step": m.step, "T": m.schedule.T, "classes": classes, "class_names": names,
            "text": cfg.text_cond, "guidance": (cfg.class_cond or cfg.text_cond) and m.data.kind != "table",
            "editable": editable(m),
            "samplers": [_sampler_options(s) for s in samplers_for(m)], "formats": formats_of(m.data.kind),
            "default_sampler": sampler, "default_steps": steps,
            "max_n": limits.max_n, "max_steps": min(limits.max_steps, m.schedule.T),
        }  # fmt: skip
