"""Tables: the quantile and one-hot encodings (round trips, types, labels, missing cells), one-line errors
for bad CSVs, multinomial diffusion against Bayes' rule, the mixed sampler against exact denoisers,
imputation keeping observed cells, and a short real run through the CLI (sample, edit, eval)."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch

from undiffuse.data import load_dataset
from undiffuse.data.errors import DataError
from undiffuse.data.tablefiles import builtin_table, read_csv, table_rows
from undiffuse.data.tables import decode_rows, encode_rows, fit_schema, quantile_forward, quantile_inverse
from undiffuse.diffusion.analytic import ddim_chain
from undiffuse.diffusion.multinomial import categorical_kl, posterior_probs, q_probs, sample_categorical
from undiffuse.diffusion.oracles import GaussianOracle
from undiffuse.samplers.mixed import sample_multinomial
from undiffuse.schedules import make_schedule
from undiffuse.schedules.grids import make_sigmas

CSV = """age,income,city,score,flag
34,52000.50,Paris,0.125,yes
,48000.25,Lyon,0.500,no
51,,Paris,0.875,yes
29,61000.75,,0.250,no
45,39000.00,Nice,0.625,yes
38,58000.10,Lyon,,no
62,45000.90,Paris,0.375,yes
27,70000.30,Nice,0.750,no
41,50000.60,Lyon,0.875,yes
55,43000.40,Paris,0.125,no
33,66000.20,Nice,0.500,yes
48,47000.80,Paris,0.625,no
"""


@pytest.fixture()
def table_csv(tmp_path):
    p = tmp_path / "people.csv"
    p.write_text(CSV)
    return str(p)


def test_quantile_map_round_trips_and_is_monotone():
    g = torch.Generator().manual_seed(0)
    v = torch.cat([torch.randn(300, generator=g, dtype=torch.float64).exp(), torch.tensor([1.0, 1.0, 1.0])])
    t = fit_schema(["v"], [[f"{a:.17g}"] for a in v.tolist()], [], {"v": "float"})
    col = t["columns"][0]
    z = quantile_forward(v, col["knots"], col["probs"])
    assert torch.equal(quantile_inverse(z, col["knots"], col["probs"]), v) or torch.allclose(
        quantile_inverse(z, col["knots"], col["probs"]), v, rtol=1e-12, atol=0)
    inside = torch.linspace(float(v.min()), float(v.max()), 1000, dtype=torch.float64)
    zi = quantile_forward(inside, col["knots"], col["probs"])
    assert (zi[1:] >= zi[:-1]).all() and abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1) < 0.1
    assert torch.allclose(quantile_inverse(zi, col["knots"], col["probs"]), inside, rtol=1e-9)


def test_csv_types_order_labels_and_missing_cells_round_trip(table_csv):
    t = table_rows(table_csv)
    types = {c["name"]: c["type"] for c in t["schema"]["columns"]}
    assert types == {"age": "int", "income": "float", "city": "category", "score": "float", "flag": "category"}
    rows = t["train"]
    back = decode_rows(t["schema"], encode_rows(t["schema"], t["header"], rows))
    assert back == [[c.strip() for c in r] for r in rows]  # values, labels, decimals and empty cells, in order
    forced = table_rows(table_csv, categorical=("age",))
    assert {c["name"]: c["type"] for c in forced["schema"]["columns"]}["age"] == "category"


@pytest.mark.parametrize("text, needle", [
    ("", "empty"),
    ("a,b\n1,2\n3\n", "row 3 has 1 fields"),
    ("a,a\n1,2\n", "distinct"),
    ("a,b\n" + "1,2\n" * 3, "at least 10"),
])  # fmt: skip
def test_bad_csvs_get_one_line_errors(tmp_path, text, needle):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DataError) as e:
        table_rows(str(p))
    assert needle in str(e.value) and "\n" not in str(e.value) and " — " in str(e.value)


def test_unknown_columns_and_files_are_refused(table_csv, tmp_path):
    for kw, needle in [({"target": "nope"}, "data.target"), ({"categorical": ("nope",)}, "data.categorical")]:
        with pytest.raises(DataError, match=needle):
            table_rows(table_csv, **kw)
    with pytest.raises(DataError, match="does not exist"):
        read_csv(str(tmp_path / "missing.csv"))
    t = table_rows(table_csv)
    with pytest.raises(DataError, match="is numeric but holds"):
        encode_rows(t["schema"], t["header"], [["x1", "1", "Paris", "0.1", "yes"]])


def test_builtin_tables_and_targets():
    ds = load_dataset("table:wine", "train")
    assert ds.kind == "table" and ds.num_classes == 3 and ds.x.shape[1] == 13 + 3
    assert torch.equal(ds.x[:, 13:].argmax(1), ds.y)  # the target block holds the class
    dia = load_dataset("table:diabetes", "test")
    assert dia.y is None and {c["name"]: c["type"] for c in dia.extra["table"]["columns"]}["sex"] == "category"


def _matrix(alpha: float, K: int) -> torch.Tensor:
    """Q with Q[i, j] = q(x_t = j | x_{t−1} = i) = α·[i = j] + (1 − α)/K."""
    return alpha * torch.eye(K, dtype=torch.float64) + (1 - alpha) / K


def test_multinomial_posterior_is_bayes_rule_on_the_transition_matrices():
    K, alphas = 4, torch.tensor([0.9, 0.7, 0.8], dtype=torch.float64)
    bar = torch.cumprod(alphas, 0)
    Qbar_prev = _matrix(1.0, K) @ _matrix(0.9, K) @ _matrix(0.7, K)  # x_0 → x_2
    assert torch.allclose(Qbar_prev, q_probs(torch.eye(K, dtype=torch.float64), bar[1]))  # Eq. 12 = the product
    eye = torch.eye(K, dtype=torch.float64)
    for i in range(K):
        for j in range(K):  # x_0 = i, x_3 = j: q(x_2 | x_3, x_0) ∝ q(x_3 | x_2)·q(x_2 | x_0)
            bayes = _matrix(0.8, K)[:, j] * Qbar_prev[i]
            got = posterior_probs(eye[j : j + 1], eye[i : i + 1], alphas[2], bar[1])[0]
            assert torch.allclose(got, bayes / bayes.sum(), atol=1e-12)
    p = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
    assert float(categorical_kl(p, p)) == pytest.approx(0, abs=1e-12) and float(categorical_kl(p, p.flip(1))) > 0
    draws = sample_categorical(p.expand(20000, 3), torch.rand(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(draws.mean(0), p[0], atol=0.01)


class _Oracle:
    """The exact denoiser of rows [Gaussian N(m, s²) number, category ~ π] (the parts independent). For the
    block it returns the x̂_0 for which p_θ = C(θ_post(x_t, x̂_0)) is the exact reverse step: since
    q(x_s | x_t, x_0) = A_s·B_{x_0,s}/q(x_t | x_0), that is x̂_0 ∝ p(x_0 | x_t)/q(x_t | x_0) (here π itself)."""

    def __init__(self, pi: torch.Tensor) -> None:
        self.g, self.pi = GaussianOracle(m=0.3, s=0.5), pi

    def __call__(self, x, sigma, **cond):
        ab = (1 / (1 + sigma.double() ** 2))[:, None]
        like = ab * x[:, 1:].double() + (1 - ab) / len(self.pi)  # q(x_t | x_0 = k)
        post = like * self.pi  # ∝ p(x_0 = k | x_t)
        ratio = post / like
        return torch.cat([self.g(x[:, :1], sigma), (ratio / ratio.sum(1, keepdim=True)).to(x.dtype)], 1)


def test_mixed_sampler_draws_the_exact_distributions_and_keeps_known_cells():
    pi = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    sched = make_schedule("cosine", 1000)
    sigmas = make_sigmas(sched, 30, "trailing").double()
    n = 2500
    gens = [torch.Generator().manual_seed(i) for i in range(n)]
    x = torch.randn(n, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * sigmas[0]
    out = sample_multinomial(_Oracle(pi), x, sigmas, categories=(3,), generator=gens)
    assert ((out[:, 1:] == 0) | (out[:, 1:] == 1)).all() and (out[:, 1:].sum(1) == 1).all()
    assert torch.allclose(out[:, 1:].mean(0), pi, atol=0.03)
    mean, var = ddim_chain(sigmas, 0.3, 0.5, eta=1.0).moments(0.0, float(sigmas[0]) ** 2)  # the exact chain (DDPM, β̃)
    assert abs(float(out[:, 0].mean()) - mean) < 0.03 and abs(float(out[:, 0].var()) / var - 1) < 0.08
    known = torch.zeros(n, 4, dtype=torch.bool)
    known[:, 0], known[: n // 2, 1:] = True, True
    x_known = torch.tensor([[1.25, 0.0, 0.0, 1.0]], dtype=torch.float64).expand(n, 4)
    out = sample_multinomial(_Oracle(pi), x, sigmas, categories=(3,), generator=gens, cond={"known": known, "x_known": x_known})
    assert (out[:, 0] == 1.25).all() and (out[: n // 2, 3] == 1).all()
    assert torch.allclose(out[n // 2 :, 1:].mean(0), pi, atol=0.04)  # the free half still follows π


# --- a short real run through the CLI --------------------------------------------------------------------


def _cli(*argv) -> int:
    from undiffuse.cli.main import main

    return main(list(argv))


@pytest.fixture(scope="module")
def wine_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("tables") / "wine"
    assert _cli("train", "--data", "table:wine", "--out", str(run), "--quiet") == 0  # the default preset
    return run


def test_sample_writes_the_same_columns_order_and_types(wine_run, tmp_path):
    out = tmp_path / "x.csv"
    assert _cli("sample", str(wine_run), "--n", "200", "--seed", "0", "--out", str(out), "--quiet") == 0
    header, rows = read_csv(str(out))
    real_header, real_rows = builtin_table("wine")[:2]
    assert header == real_header and len(rows) == 200
    ints = [j for j, name in enumerate(header) if name in ("magnesium", "proline")]
    assert all(re.fullmatch(r"-?\d+", r[j]) for r in rows for j in ints)
    assert {r[-1] for r in rows} <= {"class_0", "class_1", "class_2"} and len({r[-1] for r in rows}) == 3
    again = tmp_path / "y.csv"
    assert _cli("sample", str(wine_run), "--n", "5", "--seed", "0", "--batch-size", "2", "--out", str(again), "--quiet") == 0
    one = tmp_path / "c.csv"
    assert _cli("sample", str(wine_run), "--n", "5", "--class", "2", "--out", str(one), "--quiet") == 0
    assert {r[-1] for r in read_csv(str(one))[1]} == {"class_2"}
    for a, b in zip(read_csv(str(again))[1], rows[:5]):  # sample i depends only on (seed, i)
        assert a[-1] == b[-1] and [float(u) for u in a[:-1]] == pytest.approx([float(v) for v in b[:-1]], rel=1e-4)


def test_edit_imputes_holes_and_keeps_observed_cells(wine_run, tmp_path):
    header, rows = builtin_table("wine")[:2]
    holes = [list(r) for r in rows[:40]]
    for i, r in enumerate(holes):
        r[i % 13] = ""
        if i % 4 == 0:
            r[-1] = ""
    src, out = tmp_path / "holes.csv", tmp_path / "filled.csv"
    with open(src, "w", newline="") as f:
        csv.writer(f).writerows([header, *holes])
    assert _cli("edit", str(wine_run), "--table", str(src), "--out", str(out), "--seed", "0") == 0
    h2, filled = read_csv(str(out))
    assert h2 == header
    for before, after in zip(holes, filled):
        assert all(a == b for a, b in zip(after, before) if b != "")  # observed cells exactly as given
        assert all(a != "" for a in after)
    hit = sum(f[-1] == r[-1] for f, r, h in zip(filled, rows, holes) if h[-1] == "")
    assert hit >= 7  # of 10 imputed cultivars; the majority class alone gets ~4


def test_eval_beats_trivial_baselines(wine_run, tmp_path):
    prefix = tmp_path / "ev"
    assert _cli("eval", str(wine_run), "--out", str(prefix)) == 0
    rep = json.loads((tmp_path / "ev.json").read_text())
    d = rep["methods"]["diffusion"]
    assert d["efficacy"]["accuracy"] > 0.7  # majority class: 0.39
    assert d["wasserstein"] < 0.3 and d["total_variation"] < 0.15
    assert set(rep["methods"]) == {"diffusion", "gaussian copula", "smote", "gan", "vae", "real held-out"}
    assert (tmp_path / "ev.md").read_text().count("|") > 20


@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_gan_and_vae_rows_learn_a_column_dependence(kind):
    """The project's GAN/VAE as table baselines: rows [number, one-hot of (number > 0)]; the fitted model's
    blocks are exact one-hots, keep the class balance and follow the number's sign."""
    from undiffuse.baselines.tables import neural_rows

    g = torch.Generator().manual_seed(0)
    v = torch.randn(400, 1, generator=g)
    x = torch.cat([v, (v > 0).float(), (v <= 0).float()], 1)
    rows = neural_rows(kind, x, [2], 300, seed=0, steps=300, batch_size=64)
    block = rows[:, 1:]
    assert set(block.unique().tolist()) == {0.0, 1.0} and (block.sum(1) == 1).all()
    assert 0.3 < block[:, 0].mean() < 0.7
    agree = ((rows[:, 0] > 0) == (block[:, 0] == 1)).float().mean()
    assert agree > 0.7  # independent columns: 0.5
