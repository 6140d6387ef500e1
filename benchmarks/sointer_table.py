"""SOInter vs energy occlusion, LIME, Kernel SHAP and L2X on the structured tasks with known relevant features.

For every task and every output variable t: k = the number of truly relevant features of t; each method ranks the
D features per test input; we report post-hoc F1 and accuracy (black box on the input masked to the top k vs on the
full input, target variable t) and the median rank of the relevant features, averaged over the outputs of the task,
plus explanation time per input (interpreter training excluded). LIME / Kernel SHAP explain the probability of
output t; they and energy occlusion are ranked by |attribution| (a feature pushing either way is relevant); the
learned selectors by their logits.

Grouped tasks (segmentation: 2x2 patches of 16x16 shape images; sequence: tokens of trigger-tagged sequences) are run
per named target (the whole map / a central region; the whole tag sequence / one token's tag) with the task's k and
per-input ground truth; the median rank is taken over the inputs where something drives the target. LIME / Kernel
SHAP explain, for a multi-output target, the black box's agreement with its own full-input prediction ŷ over the
target outputs, Σ_j ŷ_j p_j + (1 − ŷ_j)(1 − p_j) (one input at a time, so ŷ is that input's); for segmentation the
table adds the relative accuracy of the masked prediction (pixel accuracy vs the full-input map).

    OMP_NUM_THREADS=1 python benchmarks/sointer_table.py --n-test 200 --out benchmarks/results/sointer.md
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

import pathxai as px
import pathxai.structured as st
from pathxai.metrics import median_rank, posthoc_accuracy, posthoc_f1, relative_accuracy

METHODS = ["sointer", "energy_occlusion", "lime", "kernel_shap", "l2x"]


def run(task_name: str, n_test: int, n_samples: int) -> dict[str, dict[str, float]]:
    task = st.load_task(task_name)
    x = task.x_test[:n_test]
    t0 = time.perf_counter()
    energy = st.pretrained_energy(task_name)
    energy_time = time.perf_counter() - t0
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for t in range(task.n_outputs):
        k = int(task.relevant[t].sum())
        for name in METHODS:
            train = 0.0
            if name in ("sointer", "l2x"):
                t0 = time.perf_counter()
                sel = st.pretrained_selector(task_name, target=t, k=k, kind=name)
                train = time.perf_counter() - t0
                method = px.get_method(name)(task.black_box, interpreter=sel, batch_size=256)
            elif name == "energy_occlusion":
                method = px.get_method(name)(task.black_box, energy=energy, batch_size=256)
            else:
                method = px.get_method(name)(task.black_box, n_samples=n_samples, batch_size=256, seed=0)
            e = method.explain(x, target=t)
            a = e.attribution.abs() if name in ("energy_occlusion", "lime", "kernel_shap") else e.attribution
            r = acc[name]
            r["posthoc_f1"].append(posthoc_f1(task.black_box, x, a, t, k).summary)
            r["posthoc_acc"].append(posthoc_accuracy(task.black_box, x, a, t, k).summary)
            r["median_rank"].append(median_rank(a, task.relevant[t]).summary)
            r["ms_per_input"].append(1000 * e.meta["wall_time_s"] / len(x))
            r["train_s"].append(train)
            print(f"{task_name} t={t} k={k} {name:17s} F1 {r['posthoc_f1'][-1]:.3f} acc {r['posthoc_acc'][-1]:.3f} "
                  f"rank {r['median_rank'][-1]:.2f} {r['ms_per_input'][-1]:.2f} ms/input", flush=True)
    out = {name: {m: sum(v) / len(v) for m, v in d.items()} for name, d in acc.items()}
    for name in ("sointer", "l2x"):
        out[name]["train_s"] = sum(acc[name]["train_s"])  # total over the task's outputs (0 when cached)
    out["_energy_s"] = {"train_s": energy_time}
    out["_per_output"] = {name: acc[name]["posthoc_f1"] for name in METHODS}  # type: ignore[dict-item]
    return out


def _agreement(y_hat: torch.Tensor, outputs: list[int]):
    """Scalar LIME / Kernel SHAP explain for a multi-output target: agreement with ŷ (1, L) over the outputs."""
    yt = y_hat[:, outputs]
    return lambda out: (yt * out[:, outputs] + (1 - yt) * (1 - out[:, outputs])).sum(1)


def explain_grouped(task: st.StructuredTask, name: str, target: str, x: torch.Tensor, n_samples: int
                    ) -> tuple[torch.Tensor, float]:
    """(N, G) attribution (ranked as the table ranks it) and seconds spent explaining."""
    outputs, _ = task.targets[target]
    groups = task.group_index
    single = len(outputs) == 1
    if name in ("sointer", "l2x"):
        sel = st.pretrained_selector(task.name, target, kind=name)
        e = px.get_method(name)(task.black_box, interpreter=sel, batch_size=256).explain(x)
        return e.attribution, e.meta["wall_time_s"]
    if name == "energy_occlusion":
        whole = len(outputs) == task.n_outputs
        method = px.get_method(name)(task.black_box, energy=st.pretrained_energy(task.name), groups=groups,
                                     batch_size=256, whole_structure=whole,
                                     region=None if whole or single else list(outputs))
        e = method.explain(x, outputs[0] if single else None)
        return e.attribution.abs(), e.meta["wall_time_s"]
    method = px.get_method(name)(task.black_box, n_samples=n_samples, batch_size=256, seed=0, groups=groups)
    if single:
        e = method.explain(x, outputs[0])
        return e.attribution.abs(), e.meta["wall_time_s"]
    with torch.no_grad():
        y_hat = st.harden(task.black_box(x))
    parts, wall = [], 0.0
    for j in range(x.shape[0]):
        e = method.explain(x[j:j + 1], _agreement(y_hat[j:j + 1], list(outputs)))
        parts.append(e.attribution)
        wall += e.meta["wall_time_s"]
    return torch.cat(parts).abs(), wall


def run_grouped(task_name: str, n_test: int, n_samples: int) -> dict[str, dict]:
    task = st.load_task(task_name)
    x = task.x_test[:n_test]
    groups = task.group_index
    out: dict[str, dict] = {}
    for target, (outputs, k) in task.targets.items():
        rel = task.relevant_for(outputs)[:n_test]
        has = rel.any(1)
        rows = {}
        for name in METHODS:
            a, wall = explain_grouped(task, name, target, x, n_samples)
            r = {"posthoc_f1": posthoc_f1(task.black_box, x, a, outputs, k, groups=groups).summary,
                 "posthoc_acc": posthoc_accuracy(task.black_box, x, a, outputs, k, groups=groups).summary,
                 "relative_acc": relative_accuracy(task.black_box, x, a, outputs, k, groups=groups).summary,
                 "median_rank": median_rank(a[has], rel[has]).summary, "ms_per_input": 1000 * wall / len(x)}
            rows[name] = r
            print(f"{task_name}/{target} k={k} {name:17s} F1 {r['posthoc_f1']:.3f} acc {r['posthoc_acc']:.3f} "
                  f"rel.acc {r['relative_acc']:.4f} rank {r['median_rank']:.2f} {r['ms_per_input']:.2f} ms/input",
                  flush=True)
        out[target] = {"rows": rows, "k": k, "n_outputs": len(outputs), "n_ranked": int(has.sum()),
                       "rel_size": float(rel[has].sum(1).float().mean())}
    return out


def grouped_table(task_name: str, res: dict[str, dict], n_groups: int) -> list[str]:
    seg = task_name == "segmentation"
    lines = []
    for target, r in res.items():
        lines += [f"## {task_name} / {target} ({r['n_outputs']} output variables, k = {r['k']} of G = {n_groups} "
                  f"groups; ground truth {r['rel_size']:.1f} groups on average, ranked over {r['n_ranked']} inputs; "
                  f"random median rank ≈ {(n_groups + 1) / 2:.1f})", "",
                  "| method | post-hoc F1 | " + ("relative accuracy | " if seg else "") +
                  "post-hoc acc (all target outputs equal) | median rank | ms / input |",
                  "|---|---|---|---|---|" + ("---|" if seg else "")]
        for name in METHODS:
            m = r["rows"][name]
            lines.append(f"| {name} | {m['posthoc_f1']:.3f} | " + (f"{m['relative_acc']:.4f} | " if seg else "") +
                         f"{m['posthoc_acc']:.3f} | {m['median_rank']:.2f} | {m['ms_per_input']:.2f} |")
        lines.append("")
    return lines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--n-samples", type=int, default=200, help="LIME / Kernel SHAP perturbations per input")
    p.add_argument("--tasks", nargs="+", default=list(st.data.TASKS))
    p.add_argument("--out", default=None)
    args = p.parse_args()
    started = time.perf_counter()
    lines = ["# SOInter benchmark (issue 9)", "",
             f"Command: `OMP_NUM_THREADS=1 python benchmarks/sointer_table.py --n-test {args.n_test} "
             f"--n-samples {args.n_samples}{' --tasks ' + ' '.join(args.tasks) if args.tasks != list(st.data.TASKS) else ''}"
             f"{' --out ' + args.out if args.out else ''}`", "",
             f"torch {torch.__version__}, 2 shared CPU cores. Per task: mean over its output variables t of the "
             f"post-hoc F1 / accuracy with k = |relevant(t)| and the median rank of the relevant features "
             f"(random ≈ (D+1)/2); time = explanation wall time per input (interpreter training excluded, "
             f"cached nets load in ms).", ""]
    for task_name in args.tasks:
        if st.load_task(task_name).relevant.ndim == 3:
            lines += grouped_table(task_name, run_grouped(task_name, args.n_test, args.n_samples),
                                   st.load_task(task_name).n_features)
            continue
        res = run(task_name, args.n_test, args.n_samples)
        d = st.load_task(task_name).n_features
        lines += [f"## {task_name} (D = {d}, random median rank ≈ {(d + 1) / 2:.1f})", "",
                  "| method | post-hoc F1 | post-hoc acc | median rank | ms / input | per-output F1 |",
                  "|---|---|---|---|---|---|"]
        for name in METHODS:
            r = res[name]
            per = ", ".join(f"{v:.2f}" for v in res["_per_output"][name])  # type: ignore[index]
            lines.append(f"| {name} | {r['posthoc_f1']:.3f} | {r['posthoc_acc']:.3f} | {r['median_rank']:.2f} | "
                         f"{r['ms_per_input']:.2f} | {per} |")
        lines.append("")
    lines.append(f"Total run time: {time.perf_counter() - started:.0f} s.")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
