"""Assemble benchmarks/RESULTS.md from the per-topic result files in benchmarks/results/.

    python benchmarks/assemble_results.py

Each results/*.md file is written by the benchmark script named in it, with the exact command that produced it;
this script only concatenates them under one table of contents, in a fixed order.
"""
from __future__ import annotations

import re

from pathlib import Path

from pathxai.core.files import atomic_write_text

HERE = Path(__file__).parent
ORDER = [
    ("ig_vs_captum.md", "Core: Integrated Gradients vs Captum (issue 3)"),
    ("bench_baselines.md", "Core: overhead ratio and memory of the baseline methods (`pathxai bench`)"),
    ("eval_digits_clutter/table.md", "Metrics: digits-clutter suite (`pathxai evaluate`)"),
    ("eval_photos/table.md", "Metrics: photos suite (`pathxai evaluate`)"),
    ("ablation_path.md", "Optimised ablation paths (issue 5)"),
    ("bench_methods.md", "Overhead ratios of the seed methods on EfficientNet-Lite0 (`pathxai bench`)"),
    ("samp.md", "SAMP / SAMP++ (issue 6)"),
    ("samp_pointing.md", "SAMP / SAMP++: the pointing diagnosis on small objects (issue 17)"),
    ("fi.md", "Functional Fisher information (issue 7)"),
    ("relax.md", "RELAX / U-RELAX (issue 8)"),
    ("relax_tables_digits-clutter.md", "RELAX tables on digits-clutter (issue 8)"),
    ("sointer.md", "SOInter (issue 9)"),
    ("sift.md", "SIFT-based ablation (issue 10)"),
    ("spiral.md", "Spiral-CNN denoiser (issue 11)"),
    ("runs.md", "Batch runs and Ray (issue 12)"),
    ("cnn_vs_vit.md", "Bring your own model: every image method on a CNN and a ViT (issue 16)"),
    ("bench_vit.md", "Bring your own model: overhead of IG and RISE on the ViT (issue 16)"),
    ("sanity.md", "Sanity checks: model-parameter randomisation, digits CNN (issue 19)"),
    ("sanity_efficientnet.md", "Sanity checks: model-parameter randomisation, EfficientNet-Lite0 (issue 19)"),
    ("metric_agreement.md", "Metric agreement on the suites (issue 19)"),
    ("sampling_choice_digits-clutter-cnn.md", "Sampling methods: how the default samplers were chosen (issue 18)"),
    ("sampling.md", "Sampling methods: error against time, and tol (issue 18)"),
    ("ablation_speed.md", "Ablation paths: coarse-to-fine schedule against the thesis schedule (issue 18)"),
]
COMMANDS = {
    "eval_digits_clutter/table.md": "OMP_NUM_THREADS=1 pathxai evaluate --suite digits-clutter --methods "
                                    "ig,gradcam,rise,occlusion,ablation_path --metrics insertion,deletion,pointing "
                                    "--n-images 40 --out benchmarks/results/eval_digits_clutter",
    "eval_photos/table.md": "OMP_NUM_THREADS=1 pathxai evaluate --suite photos --methods "
                            "ig,gradcam,rise,occlusion,ablation_path --metrics insertion,deletion,pointing "
                            "--n-images 6 -p rise.n_masks=1000 --out benchmarks/results/eval_photos",
    "ig_vs_captum.md": "python benchmarks/ig_vs_captum.py --repeats 3",
    "bench_methods.md": "OMP_NUM_THREADS=1 pathxai bench --model efficientnet-lite0 --methods "
                        "fi,samp,samp++,ablation_path --repeats 2 --no-memory",
    "bench_baselines.md": "OMP_NUM_THREADS=1 pathxai bench --model efficientnet-lite0 --repeats 3 --no-memory; "
                          "pathxai bench --model efficientnet-lite0 --repeats 3   # memory table",
    "bench_vit.md": "OMP_NUM_THREADS=1 pathxai bench --model clutter-vit --methods ig,rise --repeats 3 "
                    "--out benchmarks/results/bench_vit.md",
}


def demote_headings(text: str) -> str:
    """Push the included file's markdown headings two levels down (outside code blocks only)."""
    out, in_code = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        out.append("##" + line if line.startswith("#") and not in_code else line)
    return "\n".join(out)


def main() -> None:
    parts = ["# Benchmark results",
             "",
             "Every table below was produced by the command printed with it, on the project's 2-core CPU machines "
             "(no GPU). Speeds are ratios against a reference measured in the same process, interleaved, because "
             "the machines are shared: several tables were measured while other jobs loaded the machine (load "
             "average 5-15), which each section states; absolute seconds there are inflated, ratios less so.",
             "Regenerate this file with `python benchmarks/assemble_results.py` after re-running a benchmark.",
             "Defaults that changed since some tables were measured: `ablation_path` now uses "
             "`schedule=\"coarse_to_fine\"` (tables of issues 5 and the evaluate tables were measured with the "
             "thesis schedule, `schedule=\"thesis\"` reproduces them bit for bit); the sampling methods use the "
             "samplers of issue 18 (`sampling=\"mc\"` reproduces earlier tables bit for bit); SAMP++ was reworked "
             "in issue 17 (samp.md labels the one table that predates it, the photo columns). Each section names its "
             "commit or command.",
             ""]
    toc, body = [], []
    for name, title in ORDER:
        path = HERE / "results" / name
        if not path.exists():
            continue
        anchor = title.lower()
        toc.append(f"- {title}")
        body += [f"## {title}", ""]
        if name in COMMANDS:
            body += ["```bash", COMMANDS[name], "```", ""]
        text = path.read_text().strip()
        text = demote_headings(text)
        # image links in a result file are relative to its folder; RESULTS.md lives one level up
        base = path.parent.relative_to(HERE).as_posix() + "/" + (str(Path(name).parent) + "/" if "/" in name else "")
        text = re.sub(r"!\[([^\]]*)\]\((?!https?:|/)([^)]+)\)", lambda m: f"![{m.group(1)}]({base}{m.group(2)})", text)
        body += [text, ""]
        del anchor
    atomic_write_text(HERE / "RESULTS.md", "\n".join(parts + toc + [""] + body) + "\n")


if __name__ == "__main__":
    main()
