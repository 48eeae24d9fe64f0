"""Conditional generation on Fashion-MNIST, measured with the in-domain classifier (issue 6).

    python benchmarks/conditional.py --class-run runs/cond_class --text-run runs/cond_text [--quick]

Runs (trained beforehand, e.g. ``undiffuse train --data fashion-mnist --cond class --out runs/cond_class``):
a class-conditional and a text-conditional model of the ``fmnist`` preset. Measures, with a SmallClassifier
trained once on the training set (cached next to the runs):

- guidance sweep w ∈ {0, 1, 2, 4, 8}: accuracy of the intended class, classifier-feature Fréchet distance
  to the test set, precision/recall (k = 3) — for class labels, and for the HELD-OUT prompt phrasings
  (worded differently from every training caption) of the text model;
- inpainting (class model): max error on the known region, classifier agreement of the filled image
  with the original's class (unguided and guided by the true label);
- DDIM inversion + reconstruction: RMSE against the number of steps;
- dynamic thresholding (Imagen, percentile 0.995) instead of clipping at w ≥ 4 (``--only threshold``);
- grids: samples per class and per held-out prompt.

Writes ``benchmarks/results/conditional.json`` and ``docs/images/cond_*.png``; prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import undiffuse
from undiffuse import editing
from undiffuse.api import conditioning, guided_denoiser, sample
from undiffuse.data import load_dataset, save_image_grid
from undiffuse.evaluation.classifier import SmallClassifier, classifier_frechet, train_classifier
from undiffuse.evaluation.prdc import prdc
from undiffuse.schedules.grids import discrete_sigmas
from undiffuse.text import caption_templates

ROOT = Path(__file__).resolve().parents[1]


def get_classifier(path: Path, x, y) -> SmallClassifier:
    if path.is_file():
        return SmallClassifier.load(path)
    t = time.time()
    clf = train_classifier(x, y, epochs=3, seed=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    clf.save(path)
    print(f"classifier trained in {time.time() - t:.0f} s")
    return clf


def metrics(clf, x, labels, ref_feats, real_pr) -> dict:
    feats = clf.features(x)
    acc = float((clf.predict(x) == labels.cpu()).double().mean())
    pr = prdc(real_pr, feats, k=3)
    return {"accuracy": acc, "fd": classifier_frechet(feats, ref_feats), "precision": pr["precision"],
            "recall": pr["recall"], "n": len(x)}


def sweep(model, clf, ws, n, steps, sampler, ref_feats, real_pr, make_cond, label) -> list[dict]:
    rows = []
    for w in ws:
        t = time.time()
        kw, labels = make_cond(w)
        x = sample(model, n, seed=0, sampler=sampler, steps=steps, **kw)
        r = {"w": w, **metrics(clf, x, labels, ref_feats, real_pr), "seconds": time.time() - t}
        rows.append(r)
        print(f"{label} w={w}: acc {r['accuracy']:.3f} FD {r['fd']:.2f} P {r['precision']:.3f} "
              f"R {r['recall']:.3f} ({r['seconds']:.0f} s)", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--class-run", default="runs/cond_class")
    ap.add_argument("--text-run", default="runs/cond_text")
    ap.add_argument("--ws", default="0,1,2,4,8")
    ap.add_argument("--n", type=int, default=200, help="samples per guidance scale (a multiple of 10)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--sampler", default="dpmpp_2m")
    ap.add_argument("--n-edit", type=int, default=50)
    ap.add_argument("--inv-steps", default="5,10,25,50")
    ap.add_argument("--n-inv", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny settings to check the script")
    ap.add_argument("--only", default="class,text,inpaint,invert,threshold,grids")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "conditional.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.quick:
        a.ws, a.n, a.steps, a.n_edit, a.inv_steps, a.n_inv = "0,2", 20, 4, 10, "3,6", 4
    ws = [float(w) for w in a.ws.split(",")]
    only = set(a.only.split(","))
    out_path = Path(a.out)
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    img_dir = ROOT / "docs" / "images"
    img_dir.mkdir(parents=True, exist_ok=True)

    train_ds, test_ds = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    clf = get_classifier(ROOT / "runs" / "fmnist_classifier.safetensors", train_ds.x, train_ds.y)
    results["classifier_test_accuracy"] = float((clf.predict(test_ds.x) == test_ds.y).double().mean())
    ref_feats = clf.features(test_ds.x)
    g = torch.Generator().manual_seed(0)
    pr_idx = torch.randperm(len(test_ds.x), generator=g)[: max(a.n, 1000)]
    real_pr = ref_feats[pr_idx]
    results["settings"] = {"n": a.n, "steps": a.steps, "sampler": a.sampler, "fd_reference": "10k test images",
                           "pr_reference": f"{len(pr_idx)} test images", "k": 3}  # fmt: skip
    print(f"classifier test accuracy {results['classifier_test_accuracy']:.3f}", flush=True)

    cm = undiffuse.load(a.class_run, device="cpu") if Path(a.class_run).is_dir() else None
    tm = undiffuse.load(a.text_run, device="cpu") if Path(a.text_run).is_dir() else None
    for m, key in ((cm, "class_model"), (tm, "text_model")):
        if m is not None:
            results[key] = {"run": str(m.checkpoint.parent.parent), "step": m.step,
                            "examples": m.step * m.config.train.batch_size}  # fmt: skip
    labels_n = torch.arange(a.n) % 10

    if cm is not None and "class" in only:
        make = lambda w: (conditioning(cm, a.n, labels_n, None, w), labels_n)
        results["class_sweep"] = sweep(cm, clf, ws, a.n, a.steps, a.sampler, ref_feats, real_pr, make, "class")

    if cm is not None and "threshold" in only:  # Imagen's dynamic thresholding at high guidance
        make = lambda w: ({**conditioning(cm, a.n, labels_n, None, w), "threshold": 0.995}, labels_n)
        results["class_threshold_sweep"] = sweep(cm, clf, [w for w in ws if w >= 4], a.n, a.steps, a.sampler,
                                                 ref_feats, real_pr, make, "class, dynamic thresholding")  # fmt: skip

    heldout = caption_templates("heldout")
    if tm is not None and "text" in only:
        # sample i: class i mod 10, held-out phrasing (i // 10) mod 4 of that class
        prompts = [heldout[i % 10][(i // 10) % len(heldout[i % 10])] for i in range(a.n)]
        make = lambda w: (conditioning(tm, a.n, None, prompts, w), labels_n)
        results["text_heldout_sweep"] = sweep(tm, clf, ws, a.n, a.steps, a.sampler, ref_feats, real_pr, make,
                                              "text held-out")  # fmt: skip
        train_caps = caption_templates("train")
        prompts_tr = [train_caps[i % 10][(i // 10) % len(train_caps[i % 10])] for i in range(a.n)]
        best = max(results["text_heldout_sweep"], key=lambda r: r["accuracy"])["w"]
        make = lambda w: (conditioning(tm, a.n, None, prompts_tr, w), labels_n)
        results["text_train_at_best"] = sweep(tm, clf, [best], a.n, a.steps, a.sampler, ref_feats, real_pr, make,
                                              "text train phrasings")  # fmt: skip

    if cm is not None and "inpaint" in only:
        x0, y0 = test_ds.x[: a.n_edit], test_ds.y[: a.n_edit]
        H = x0.shape[-1]
        masks = {"right half": torch.zeros(1, 1, H, H), "centre 14×14": torch.zeros(1, 1, H, H)}
        masks["right half"][..., H // 2 :] = 1
        masks["centre 14×14"][..., 7:21, 7:21] = 1
        sig = discrete_sigmas(cm.schedule, 20)
        rows = []
        for name, mask in masks.items():
            for guide in (None, 2.0):
                t = time.time()
                cond = {"class_labels": y0.clone()} if guide is not None else {}
                den = guided_denoiser(cm, guidance=guide)
                gens = [torch.Generator().manual_seed(i) for i in range(len(x0))]
                out = editing.inpaint(den, x0, mask, sig, sampler="ddim", generator=gens, cond=cond).clamp(-1, 1)
                keep = (1 - mask).bool().expand_as(x0)
                err = float((out - x0)[keep].abs().max())
                pred = clf.predict(out)
                rows.append({"mask": name, "guidance": "none (null label)" if guide is None else f"true label, w={guide}",
                             "known_max_abs_err": err, "agreement": float((pred == y0).double().mean()),
                             "hole_rmse": float((out - x0)[~keep].pow(2).mean().sqrt()),
                             "seconds": time.time() - t})  # fmt: skip
                print(f"inpaint {name} {guide}: known err {err:.2e}, agreement {rows[-1]['agreement']:.3f}", flush=True)
                if guide is None and name == "right half":
                    save_image_grid(torch.cat([x0[:8], (x0[:8] * (1 - mask) - mask), out[:8]]),
                                    img_dir / "cond_inpaint.png", nrow=8)  # fmt: skip
        results["inpainting"] = {"n": len(x0), "steps": 20, "sampler": "ddim", "rows": rows}

    if cm is not None and "invert" in only:
        x0 = test_ds.x[: a.n_inv]
        rows = []
        for k in [int(s) for s in a.inv_steps.split(",")]:
            t = time.time()
            sig = discrete_sigmas(cm.schedule, k)
            den = guided_denoiser(cm, clip=None)
            lat = editing.ddim_invert(den, x0, sig)
            rec = editing.ddim_reconstruct(den, lat, sig)
            rmse = (rec - x0).pow(2).flatten(1).mean(1).sqrt()
            rows.append({"steps": k, "rmse_mean": float(rmse.mean()), "rmse_max": float(rmse.max()),
                         "seconds": time.time() - t})  # fmt: skip
            print(f"invert {k} steps: RMSE {rows[-1]['rmse_mean']:.4f}", flush=True)
        results["inversion"] = {"n": len(x0), "rows": rows}

    if "grids" in only:
        best_c = max(results.get("class_sweep", [{"w": 2.0, "accuracy": 0}]), key=lambda r: r["accuracy"])["w"]
        if cm is not None:
            lab = torch.arange(10).repeat_interleave(8)
            x = sample(cm, 80, seed=1, sampler=a.sampler, steps=a.steps, **conditioning(cm, 80, lab, None, best_c))
            save_image_grid(x, img_dir / "cond_class_grid.png", nrow=8)
        if tm is not None:
            best_t = max(results.get("text_heldout_sweep", [{"w": 2.0, "accuracy": 0}]), key=lambda r: r["accuracy"])["w"]
            prompts = [heldout[k][1] for k in range(10) for _ in range(8)]
            x = sample(tm, 80, seed=1, sampler=a.sampler, steps=a.steps, **conditioning(tm, 80, None, prompts, best_t))
            save_image_grid(x, img_dir / "cond_prompt_grid.png", nrow=8)
            results["grid_prompts"] = [heldout[k][1] for k in range(10)]
        results["grid_guidance"] = {"class": best_c, "text": best_t if tm is not None else None}

    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k.endswith("sweep")}, indent=1))


if __name__ == "__main__":
    main()
