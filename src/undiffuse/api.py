"""The Python API of trained models: load a run, sample from it, save samples, measure its NLL.

Everything the CLI does is one of these functions (each lives in the module that owns its concern)::

    import undiffuse
    model = undiffuse.load("runs/fmnist")                 # EMA weights of the latest checkpoint
    x = undiffuse.api.sample(model, 64, seed=0)           # [64, 1, 28, 28] in [-1, 1]
    undiffuse.api.save_samples(x, "grid.png", model.data)
    print(undiffuse.api.nll(model, undiffuse.api.eval_data(model, n=500)))

| function | module |
|---|---|
| :func:`load`, :class:`Model` | :mod:`undiffuse.model` |
| :func:`sample`, :func:`resolve_sampling`, :func:`guided_denoiser`, :func:`null_cond`, :func:`sampler_names` | :mod:`undiffuse.sampling` |
| :func:`conditioning`, :func:`text_encoder` | :mod:`undiffuse.conditioning` |
| :func:`save_samples` | :mod:`undiffuse.data.kinds` (the writers of each kind of data) |
| :func:`nll`, :func:`eval_data` | :mod:`undiffuse.evaluation.nll` |

Sample i depends only on (seed, i) (:mod:`undiffuse.samplers.driver`).
"""

from undiffuse.conditioning import conditioning, text_encoder
from undiffuse.data.kinds import save_samples
from undiffuse.evaluation.nll import eval_data, nll
from undiffuse.model import Model, load
from undiffuse.sampling import guided_denoiser, null_cond, resolve_sampling, sample, sampler_names

__all__ = ["Model", "load", "sample", "resolve_sampling", "save_samples", "nll", "eval_data", "sampler_names", "conditioning",
           "guided_denoiser", "null_cond", "text_encoder"]
