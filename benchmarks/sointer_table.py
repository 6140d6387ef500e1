"""SOInter vs energy occlusion, LIME, Kernel SHAP and L2X on the structured tasks with known relevant features.

For every task and every output variable t: k = the number of truly relevant features of t; each method ranks the
D features per test input; we report post-hoc F1 and accuracy (black box on the input masked to the top k vs on the
full input, target variable t) and the median rank of the relevant features, averaged over the outputs of the task,
plus explanation time per input (interpreter training excluded). LIME / Kernel SHAP explain the probability of
output t; they and energy occlusion are ranked by |attribution| (a feature pushing either way is relevant); the
learned selectors by their logits.

    OMP_NUM_THREADS=1 python benchmarks/sointer_table.py --n-test 200 --out benchmarks/results/sointer.md
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

import pathxai as px
import pathxai.structured as st
from pathxai.metrics import median_rank, posthoc_accuracy, posthoc_f1

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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--n-samples", type=int, default=200, help="LIME / Kernel SHAP perturbations per input")
    p.add_argument("--tasks", nargs="+", default=list(st.data.TASKS))
    p.add_argument("--out", default=None)
    args = p.parse_args()
    lines = [f"# SOInter benchmark (issue 9)", "",
             f"Command: `OMP_NUM_THREADS=1 python benchmarks/sointer_table.py --n-test {args.n_test} "
             f"--n-samples {args.n_samples}{' --out ' + args.out if args.out else ''}`", "",
             f"torch {torch.__version__}, 2 shared CPU cores. Per task: mean over its output variables t of the "
             f"post-hoc F1 / accuracy with k = |relevant(t)| and the median rank of the relevant features "
             f"(random ≈ (D+1)/2); time = explanation wall time per input (interpreter training excluded, "
             f"cached nets load in ms).", ""]
    for task_name in args.tasks:
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
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
