"""Collect the latest benchmark results (``bench/results/*.json`` / ``*.md``) into ``docs/benchmarks.md``.

Nothing is measured here: every number comes from the JSON the benchmark scripts wrote, with the date of
the file and the command that regenerates it. Missing results are listed as "not run yet".

    python bench/collect.py                 # writes docs/benchmarks.md
    python bench/collect.py --out /tmp/b.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _committed_at(path: Path) -> dt.datetime | None:
    """When git last committed ``path``, if it is committed and unchanged since (a fresh clone's mtimes are the
    clone's time, not the measurement's); ``None`` outside git or for a new / modified file."""
    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args, "--", str(path)], cwd=ROOT, capture_output=True, text=True,
                                  check=False)
        except OSError:  # no git on this machine
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""
    if git("status", "--porcelain"):
        return None
    when = git("log", "-1", "--format=%cI")
    return dt.datetime.fromisoformat(when).astimezone(dt.timezone.utc) if when else None


def _stamp(path: Path, data: dict | None = None) -> str:
    """Where a result lives and when it was measured: the JSON's own ``date`` if any, else the commit that added
    the file, else (a result not committed yet) the file's mtime."""
    if data and data.get("date"):
        return f"`{path.relative_to(ROOT)}`, measured {str(data['date'])[:16].replace('T', ' ')}"
    when = _committed_at(path) or dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.timezone.utc)
    return f"`{path.relative_to(ROOT)}`, written {when:%Y-%m-%d %H:%M} UTC"


def _load(name: str) -> tuple[dict | None, Path]:
    path = RESULTS / name
    return (json.loads(path.read_text()) if path.exists() else None), path


def _md_body(path: Path) -> list[str]:
    """A benchmark's markdown table without its first heading (the section heading replaces it)."""
    lines = path.read_text().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return lines


def step_cost_section() -> list[str]:
    data, path = _load("step_cost.json")
    out = ["## Cost of one search step (`bench/step_cost.py`)", ""]
    if data is None:
        return out + ["Not run yet: `python bench/step_cost.py`.", ""]
    env = data.get("environment", {})
    out += [f"Device {env.get('device', '?')}, {env.get('threads', '?')} thread(s), batch "
            f"{data['config']['batch_size']}, {data['network']['params']:,} parameters; {_stamp(path, data)}.", "",
            "| method | median s / step | × plain | peak memory (MiB) |", "|---|---|---|---|"]
    plain = data["methods"]["plain"]["median_s"]
    for name, m in data["methods"].items():
        mem = m.get("peak_memory_bytes")
        mem_mib = f"{mem / 2**20:.0f}" if mem else "-"
        out.append(f"| {name} | {m['median_s']:.3f} | {m['median_s'] / plain:.2f} | {mem_mib} |")
    floors = data.get("pass_count_floors", {})
    out += ["", "| ratio | value | pass-count floor | target | met |", "|---|---|---|---|---|"]
    targets = {"rarts_fused/darts1": 1.05, "rarts_fused/darts2": 0.40, "rarts_exact/darts1": 2.0}
    for key, value in data["ratios"].items():
        t = targets.get(key)
        floor = f"{floors[key]:.2f}" if key in floors else ""
        out.append(f"| {key} | {value:.2f} | {floor} | {'<= ' + str(t) if t else ''} | "
                   f"{('yes' if value <= t else '**no**') if t else ''} |")
    if "alpha_only/full" in floors:
        out += ["", f"An alpha-only pass costs {floors['alpha_only/full']:.2f}× a pass with weight gradients "
                "(`pass_alpha_only` / `pass_full`). The floor is what the pass counts alone allow: fused RARTS "
                "runs two full passes, DARTS-1 one full and one alpha-only pass, DARTS-2 three full and two "
                "alpha-only passes."]
    return out + [""]


def overhead_section() -> list[str]:
    data, path = _load("overhead.json")
    out = ["## Overhead of the scores and of surgery (`bench/overhead.py`)", ""]
    if data is None:
        return out + ["Not run yet: `python bench/overhead.py`.", ""]
    out += [f"Forward + backward, training mode, {data.get('device')} with {data.get('threads')} thread(s), "
            f"interleaved medians; {_stamp(path)}.", "",
            "| model | batch | input | scored (param) / plain | scored (hook) / plain | pruned / same-size plain |",
            "|---|---|---|---|---|---|"]
    for r in data["rows"]:
        q = r["ratios"]
        out.append(f"| {r['model']} | {r['batch']} | {r['input']} | {q['scored_param_over_plain']:.2f} | "
                   f"{q['scored_hook_over_plain']:.2f} | {q['pruned_over_same_size_plain']:.2f} |")
    return out + [""]


#: The width-quality sections with the current defaults: (title, results markdown, command).
WIDTH_QUALITY = (
    ("Width search at equal MACs, after training, with gradual pruning (`--gradual 0.5`), 3 seeds, the converged "
     "baseline (2026-12-05)", "equal_macs_after_b100_ft1e-3_gradual.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --baseline-epochs 100 --finetune-epochs 10 "
     "--finetune-lr 0.001 --work runs/pq_b100_ft1e-3 --rarts-l1 0 --rarts-cost-weight 2 --rarts-arch-lr 0.01 "
     "--rarts-importance l1_norm --gradual 0.5 --out bench/results/equal_macs_after_b100_ft1e-3_gradual.json"),
    ("Gradual RARTS against gradual magnitude pruning (the same schedule)", "equal_macs_after_b100_ft1e-3_gradual_both.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --baseline-epochs 100 --finetune-epochs 10 "
     "--finetune-lr 0.001 --work runs/pq_b100_ft1e-3 --rarts-l1 0 --rarts-cost-weight 2 --rarts-arch-lr 0.01 "
     "--rarts-importance l1_norm --gradual 0.5 --methods rarts,l1_norm --gradual-methods rarts,l1_norm --no-control "
     "--out bench/results/equal_macs_after_b100_ft1e-3_gradual_both.json"),
    ("The equal-MACs runs on the 6,000 test images no reported number used (seeds 0-2)",
     "equal_macs_after_b100_ft1e-3_heldout.md",
     "python bench/heldout_eval.py --threads 1 --work runs/pq_b100_ft1e-3 --seeds 0,1,2 "
     "--out bench/results/equal_macs_after_b100_ft1e-3_heldout.json"),
    ("Width search at equal MACs, after training, the defaults over 5 seeds", "equal_macs_after_b100_ft1e-3_5seeds.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2,3,4 --baseline-epochs 100 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_b100_ft1e-3 "
     "--out bench/results/equal_macs_after_b100_ft1e-3_5seeds.json"),
    ("The same 5 seeds on the unseen test images", "equal_macs_after_b100_ft1e-3_heldout_5seeds.md",
     "python bench/heldout_eval.py --threads 1 --work runs/pq_b100_ft1e-3 --seeds 0,1,2,3,4 "
     "--out bench/results/equal_macs_after_b100_ft1e-3_heldout_5seeds.json"),
    ("Width search at equal MACs, after training, the job's default since 2026-12-05 (gradual) over 5 seeds",
     "equal_macs_after_b100_ft1e-3_gradual_5seeds.md",
     "python bench/equal_macs.py --threads 2 --protocols after --seeds 0,1,2,3,4 --baseline-epochs 100 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_b100_ft1e-3 --rarts-l1 0 --rarts-cost-weight 2 "
     "--rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 --gradual-methods rarts "
     "--out bench/results/equal_macs_after_b100_ft1e-3_gradual_5seeds.json"),
    ("The same 5 seeds on the unseen test images (every arm)", "equal_macs_after_b100_ft1e-3_heldout_gradual_5seeds.md",
     "python bench/heldout_eval.py --threads 2 --work runs/pq_b100_ft1e-3 --seeds 0,1,2,3,4 "
     "--out bench/results/equal_macs_after_b100_ft1e-3_heldout_gradual_5seeds.json"),
    ("Channel criteria with gradual searches (training images only)", "criterion_quality_b100_gradual.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --search-epochs 1 --budgets 0.6,0.35 "
     "--variants default,budget_default,gradual_budget,gradual_ratio_pressure,gradual_l1_norm,gradual_budget_all,"
     "gradual_budget_l1aw,gradual_ratio_l1aw,gradual_nopressure_l1aw,gradual_budget_l1aw_alr1e-2,"
     "gradual_nopressure_l1aw_alr1e-2,gradual_budget_alr1e-2,gradual_budget_fused_l1aw "
     "--out bench/results/criterion_quality_b100_gradual.json"),
    ("Levers at 0.6x MACs judged after fine-tuning (training images only)", "criterion_quality_b100_levers06.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --search-epochs 1 --budgets 0.6 "
     "--finetune-epochs 10 --finetune-lr 0.001 --finetune-only '^l1_norm$|gradual' --variants gradual_l1_norm,"
     "gradual_budget_l1aw_alr1e-2,gradual_chosen_wlr1e-3,gradual_chosen_swap,gradual_chosen_g0.25,"
     "gradual_l1_norm_wlr1e-3 --out bench/results/criterion_quality_b100_levers06.json"),
    ("Distillation from the unpruned network in the search's loss, judged after fine-tuning (training images "
     "only, 2026-12-06)", "criterion_quality_b100_distill.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --search-epochs 1 --budgets 0.6,0.35 "
     "--finetune-epochs 10 --finetune-lr 0.001 --finetune-only gradual --variants gradual_l1_norm,"
     "gradual_budget_l1aw_alr1e-2,gradual_chosen_kd0.5,gradual_l1_norm_kd0.5,gradual_chosen_kd1,gradual_l1_norm_kd1 "
     "--out bench/results/criterion_quality_b100_distill.json"),
    ("With distillation in the search: its MACs pressure and its readout measured again (training images only, "
     "2026-12-06)", "criterion_quality_b100_kd_levers.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --budgets 0.6,0.35 --finetune-epochs 10 "
     "--finetune-lr 0.001 --finetune-only gradual --search-epochs 1 --variants gradual_l1_norm_kd1,gradual_chosen_kd1,"
     "gradual_chosen_kd1_nopressure,gradual_chosen_kd1_alpha --out bench/results/criterion_quality_b100_kd_levers.json"),
    ("Distilled searches twice as long, against an equally long distilled magnitude arm (training images only)",
     "criterion_quality_b100_kd_e2.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --budgets 0.6,0.35 --finetune-epochs 10 "
     "--finetune-lr 0.001 --finetune-only gradual --search-epochs 2 --variants gradual_l1_norm_kd1,gradual_chosen_kd1 "
     "--out bench/results/criterion_quality_b100_kd_e2.json"),
    ("Distillation in the fine-tuning too (training images only)", "criterion_quality_b100_ftkd.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --budgets 0.6,0.35 --finetune-epochs 10 "
     "--finetune-lr 0.001 --finetune-only 'gradual|^l1_norm$' --finetune-distill 1 --search-epochs 1 "
     "--variants gradual_l1_norm_kd1,gradual_chosen_kd1 --out bench/results/criterion_quality_b100_ftkd.json"),
    ("The distilled pair on a second diagnostic seed (training images only)", "criterion_quality_b100_kd_s1.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --budgets 0.6,0.35 --finetune-epochs 10 "
     "--finetune-lr 0.001 --finetune-only gradual --seed 1 --search-epochs 1 --variants gradual_l1_norm_kd1,gradual_chosen_kd1 "
     "--out bench/results/criterion_quality_b100_kd_s1.json"),
    ("Distilled fine-tuning on the second diagnostic seed (training images only)", "criterion_quality_b100_ftkd_s1.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --budgets 0.6,0.35 --finetune-epochs 10 "
     "--finetune-lr 0.001 --finetune-only 'gradual|^l1_norm$' --finetune-distill 1 --seed 1 --search-epochs 1 "
     "--variants gradual_l1_norm_kd1,gradual_chosen_kd1 --out bench/results/criterion_quality_b100_ftkd_s1.json"),
    ("The distilled pair and the one-shot l1-norm on diagnostic seed 2, cross-entropy fine-tuning (training images only)",
     "criterion_quality_b100_pair_ftkd0_s2.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --budgets 0.6,0.35 --finetune-epochs 10 "
     "--finetune-lr 0.001 --finetune-only 'gradual|^l1_norm$' --finetune-distill 0 --seed 2 --search-epochs 1 "
     "--variants gradual_l1_norm_kd1,gradual_chosen_kd1 --out bench/results/criterion_quality_b100_pair_ftkd0_s2.json"),
    ("The distilled pair and the one-shot l1-norm on diagnostic seed 2, distilled fine-tuning (training images only)",
     "criterion_quality_b100_pair_ftkd1_s2.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --budgets 0.6,0.35 --finetune-epochs 10 "
     "--finetune-lr 0.001 --finetune-only 'gradual|^l1_norm$' --finetune-distill 1 --seed 2 --search-epochs 1 "
     "--variants gradual_l1_norm_kd1,gradual_chosen_kd1 --out bench/results/criterion_quality_b100_pair_ftkd1_s2.json"),
    ("The distilled pair and the one-shot l1-norm on diagnostic seed 3, cross-entropy fine-tuning (training images only)",
     "criterion_quality_b100_pair_ftkd0_s3.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --budgets 0.6,0.35 --finetune-epochs 10 "
     "--finetune-lr 0.001 --finetune-only 'gradual|^l1_norm$' --finetune-distill 0 --seed 3 --search-epochs 1 "
     "--variants gradual_l1_norm_kd1,gradual_chosen_kd1 --out bench/results/criterion_quality_b100_pair_ftkd0_s3.json"),
    ("The distilled pair and the one-shot l1-norm on diagnostic seed 3, distilled fine-tuning (training images only)",
     "criterion_quality_b100_pair_ftkd1_s3.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --budgets 0.6,0.35 --finetune-epochs 10 "
     "--finetune-lr 0.001 --finetune-only 'gradual|^l1_norm$' --finetune-distill 1 --seed 3 --search-epochs 1 "
     "--variants gradual_l1_norm_kd1,gradual_chosen_kd1 --out bench/results/criterion_quality_b100_pair_ftkd1_s3.json"),
    ("The searches' widths, the channels by the baseline's magnitude: diagnostic seed 0, distilled fine-tuning "
     "(training images only)", "criterion_quality_b100_widths_s0.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --budgets 0.6,0.35 --finetune-epochs 10 "
     "--finetune-lr 0.001 --finetune-only 'gradual|^l1_norm$' --finetune-distill 1 --seed 0 --search-epochs 1 "
     "--variants gradual_l1_norm_kd1,gradual_chosen_kd1,gradual_chosen_kd1_widths_l1,gradual_l1_norm_kd1_widths_l1 "
     "--out bench/results/criterion_quality_b100_widths_s0.json"),
    ("The searches' widths, the channels by the baseline's magnitude: diagnostic seed 1, distilled fine-tuning "
     "(training images only)", "criterion_quality_b100_widths_s1.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --budgets 0.6,0.35 --finetune-epochs 10 "
     "--finetune-lr 0.001 --finetune-only 'gradual|^l1_norm$' --finetune-distill 1 --seed 1 --search-epochs 1 "
     "--variants gradual_l1_norm_kd1,gradual_chosen_kd1,gradual_chosen_kd1_widths_l1,gradual_l1_norm_kd1_widths_l1 "
     "--out bench/results/criterion_quality_b100_widths_s1.json"),
    ("The searches' widths, the channels by the baseline's magnitude: diagnostic seed 3, distilled fine-tuning "
     "(training images only)", "criterion_quality_b100_widths_s3.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --budgets 0.6,0.35 --finetune-epochs 10 "
     "--finetune-lr 0.001 --finetune-only 'gradual|^l1_norm$' --finetune-distill 1 --seed 3 --search-epochs 1 "
     "--variants gradual_l1_norm_kd1,gradual_chosen_kd1,gradual_chosen_kd1_widths_l1,gradual_l1_norm_kd1_widths_l1 "
     "--out bench/results/criterion_quality_b100_widths_s3.json"),
    ("One-shot defaults against the gradual setting, after fine-tuning (training images only)",
     "criterion_quality_b100_default_ft.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --search-epochs 1 --budgets 0.6,0.35 "
     "--finetune-epochs 10 --finetune-lr 0.001 --finetune-only '^l1_norm$|^budget_default@1ep \\|a\\*g\\|$|gradual' "
     "--variants budget_default,gradual_budget_l1aw_alr1e-2 --out bench/results/criterion_quality_b100_default_ft.json"),
    ("Twice the fine-tuning (20 epochs) at the baseline's last LR, 0.001: the gradual default against the "
     "l1-norm, 3 seeds", "equal_macs_after_b100_ft20_1e-3.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --baseline-epochs 100 "
     "--finetune-epochs 20 --finetune-lr 0.001 --methods rarts,l1_norm --work runs/pq_b100_ft20 --rarts-l1 0 "
     "--rarts-cost-weight 2 --rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 "
     "--out bench/results/equal_macs_after_b100_ft20_1e-3.json"),
    ("20 fine-tuning epochs at LR 0.001, on the unseen test images", "equal_macs_after_b100_ft20_1e-3_heldout.md",
     "python bench/heldout_eval.py --threads 1 --work runs/pq_b100_ft20 "
     "--out bench/results/equal_macs_after_b100_ft20_1e-3_heldout.json"),
    ("20 fine-tuning epochs restarting at LR 0.01 (step decay): the gradual default against the l1-norm, 3 seeds",
     "equal_macs_after_b100_ft20_1e-2.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --baseline-epochs 100 "
     "--finetune-epochs 20 --finetune-lr 0.01 --methods rarts,l1_norm --work runs/pq_b100_ft20lr1e-2 --rarts-l1 0 "
     "--rarts-cost-weight 2 --rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 "
     "--out bench/results/equal_macs_after_b100_ft20_1e-2.json"),
    ("20 fine-tuning epochs from LR 0.01, on the unseen test images", "equal_macs_after_b100_ft20_1e-2_heldout.md",
     "python bench/heldout_eval.py --threads 1 --work runs/pq_b100_ft20lr1e-2 "
     "--out bench/results/equal_macs_after_b100_ft20_1e-2_heldout.json"),
    ("A baseline trained twice as long (200 epochs, 67.9 %), every seed on its images (`data_seed`): the control "
     "meets the issue's rule; every method at equal MACs, 10 fine-tuning epochs at LR 0.001, 3 seeds (2026-12-06)",
     "equal_macs_after_b200_ft10.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --baseline-epochs 200 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_b200_ft10_fixed --rarts-l1 0 --rarts-cost-weight 2 "
     "--rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 --gradual-methods rarts "
     "--methods rarts,l1_norm,slimming,random --out bench/results/equal_macs_after_b200_ft10.json"),
    ("History: the 200-epoch baseline before `data_seed` (seeds 1 and 2 fine-tuned on new images; the control "
     "gain in it is wrong, see its note)", "equal_macs_after_b200_ft10_seeddata.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --baseline-epochs 200 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_b200_ft10 --rarts-l1 0 --rarts-cost-weight 2 "
     "--rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 --gradual-methods rarts "
     "--methods rarts,l1_norm,slimming,random (at commit c702d52, before data_seed)"),
    ("The 200-epoch baseline's runs on the unseen test images", "equal_macs_after_b200_ft10_heldout.md",
     "python bench/heldout_eval.py --threads 2 --work runs/pq_b200_ft10_fixed "
     "--out bench/results/equal_macs_after_b200_ft10_heldout.json"),
    ("The 200-epoch baseline, 5 seeds (seeds 3 and 4 added, run unchanged)", "equal_macs_after_b200_ft10_5seeds.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2,3,4 --baseline-epochs 200 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_b200_ft10_fixed --rarts-l1 0 --rarts-cost-weight 2 "
     "--rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 --gradual-methods rarts "
     "--methods rarts,l1_norm,slimming,random --out bench/results/equal_macs_after_b200_ft10_5seeds.json"),
    ("The 200-epoch baseline, 5 seeds: gradual RARTS against the same schedule by weight magnitude (equal cost)",
     "equal_macs_after_b200_ft10_gradual_both.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2,3,4 --baseline-epochs 200 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_b200_ft10_fixed --rarts-l1 0 --rarts-cost-weight 2 "
     "--rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 --gradual-methods rarts,l1_norm "
     "--methods rarts,l1_norm --out bench/results/equal_macs_after_b200_ft10_gradual_both.json"),
    ("The 200-epoch baseline, 5 seeds and the gradual magnitude arm, on the unseen test images",
     "equal_macs_after_b200_ft10_heldout_5seeds.md",
     "python bench/heldout_eval.py --threads 1 --work runs/pq_b200_ft10_fixed "
     "--out bench/results/equal_macs_after_b200_ft10_heldout_5seeds.json"),
    ("The 200-epoch baseline, 5 seeds: both gradual arms distilling from the baseline in their search / training "
     "(`--search-distill 1`, the job's default since 2026-12-06)", "equal_macs_after_b200_ft10_distill.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2,3,4 --baseline-epochs 200 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_b200_ft10_fixed --rarts-l1 0 --rarts-cost-weight 2 "
     "--rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 --gradual-methods rarts,l1_norm "
     "--methods rarts,l1_norm --search-distill 1 --out bench/results/equal_macs_after_b200_ft10_distill.json"),
    ("The 200-epoch baseline with distillation, on the unseen test images (every arm of the work folder)",
     "equal_macs_after_b200_ft10_heldout_distill.md",
     "python bench/heldout_eval.py --threads 1 --work runs/pq_b200_ft10_fixed "
     "--out bench/results/equal_macs_after_b200_ft10_heldout_distill.json"),
    ("PreResNet-20 with distillation in the fine-tuning too: both gradual arms, 3 seeds",
     "equal_macs_after_b200_ft10_ftkd.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --baseline-epochs 200 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_b200_ft10_fixed --rarts-l1 0 --rarts-cost-weight 2 "
     "--rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 --search-distill 1 --finetune-distill 1 "
     "--gradual-methods rarts,l1_norm --methods rarts,l1_norm --out bench/results/equal_macs_after_b200_ft10_ftkd.json"),
    ("PreResNet-20 with distilled fine-tuning: gradual RARTS against the one-shot l1-norm, 3 seeds",
     "equal_macs_after_b200_ft10_ftkd_oneshot.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --baseline-epochs 200 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_b200_ft10_fixed --rarts-l1 0 --rarts-cost-weight 2 "
     "--rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 --search-distill 1 --finetune-distill 1 "
     "--gradual-methods rarts --methods rarts,l1_norm --out bench/results/equal_macs_after_b200_ft10_ftkd_oneshot.json"),
    ("PreResNet-20 with distilled fine-tuning, on the unseen test images (every arm of the work folder)",
     "equal_macs_after_b200_ft10_heldout_ftkd.md",
     "python bench/heldout_eval.py --threads 1 --work runs/pq_b200_ft10_fixed "
     "--out bench/results/equal_macs_after_b200_ft10_heldout_ftkd.json"),
    ("The diagnostic's own baseline on test images, distilled search and fine-tuning, both gradual arms, 5 seeds "
     "(seeds 3-4 added later, nothing changed)", "equal_macs_after_b100_ft10_ftkd_5seeds.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2,3,4 --baseline-epochs 100 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_b100_kd --rarts-l1 0 --rarts-cost-weight 2 "
     "--rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 --search-distill 1 --finetune-distill 1 "
     "--methods rarts,l1_norm --gradual-methods rarts,l1_norm --out bench/results/equal_macs_after_b100_ft10_ftkd_5seeds.json"),
    ("The same against the one-shot l1-norm (distilled fine-tuning), 5 seeds", "equal_macs_after_b100_ft10_ftkd_oneshot_5seeds.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2,3,4 --baseline-epochs 100 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_b100_kd --rarts-l1 0 --rarts-cost-weight 2 "
     "--rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 --search-distill 1 --finetune-distill 1 "
     "--methods rarts,l1_norm --gradual-methods rarts --out bench/results/equal_macs_after_b100_ft10_ftkd_oneshot_5seeds.json"),
    ("The same 5 seeds' networks on the unseen test images", "equal_macs_after_b100_ft10_heldout_ftkd_5seeds.md",
     "python bench/heldout_eval.py --threads 1 --work runs/pq_b100_kd --seeds 0,1,2,3,4 "
     "--out bench/results/equal_macs_after_b100_ft10_heldout_ftkd_5seeds.json"),
    ("The same 5 seeds with the fine-tuning chosen per run on 5,000 unused training images: the 10 distilled "
     "epochs, or none (the same runs finalized with --finetune-epochs 0 in runs/pq_b100_kd_ft0, from the same "
     "baseline and searches)", "equal_macs_after_b100_ft10_selected_ftkd_5seeds.md",
     "python bench/heldout_eval.py --threads 1 --work runs/pq_b100_kd --select-from runs/pq_b100_kd_ft0 "
     "--methods ftkd1 --seeds 0,1,2,3,4 --out bench/results/equal_macs_after_b100_ft10_selected_ftkd_5seeds.json"),
    ("The diagnostic's own baseline (PreResNet-20, 100 epochs) on test images, distilled search and fine-tuning: "
     "both gradual arms, 3 seeds", "equal_macs_after_b100_ft10_ftkd.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --baseline-epochs 100 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_b100_kd --rarts-l1 0 --rarts-cost-weight 2 "
     "--rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 --search-distill 1 --finetune-distill 1 "
     "--methods rarts,l1_norm --gradual-methods rarts,l1_norm --out bench/results/equal_macs_after_b100_ft10_ftkd.json"),
    ("The same against the one-shot l1-norm (distilled fine-tuning), 3 seeds", "equal_macs_after_b100_ft10_ftkd_oneshot.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --baseline-epochs 100 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_b100_kd --rarts-l1 0 --rarts-cost-weight 2 "
     "--rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 --search-distill 1 --finetune-distill 1 "
     "--methods rarts,l1_norm --gradual-methods rarts --out bench/results/equal_macs_after_b100_ft10_ftkd_oneshot.json"),
    ("The same networks on the unseen test images", "equal_macs_after_b100_ft10_heldout_ftkd.md",
     "python bench/heldout_eval.py --threads 2 --work runs/pq_b100_kd --seeds 0,1,2 "
     "--out bench/results/equal_macs_after_b100_ft10_heldout_ftkd.json"),
    ("PreResNet-29 with distillation in both gradual arms, 3 seeds", "equal_macs_after_d29_b100_ft10_distill.md",
     "python bench/equal_macs.py --threads 1 --depth 29 --protocols after --seeds 0,1,2 --baseline-epochs 100 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_d29_b100 --rarts-l1 0 --rarts-cost-weight 2 "
     "--rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 --gradual-methods rarts,l1_norm "
     "--methods rarts,l1_norm --search-distill 1 --out bench/results/equal_macs_after_d29_b100_ft10_distill.json"),
    ("PreResNet-29 with distillation, on the unseen test images", "equal_macs_after_d29_b100_ft10_heldout_distill.md",
     "python bench/heldout_eval.py --threads 1 --depth 29 --work runs/pq_d29_b100 "
     "--out bench/results/equal_macs_after_d29_b100_ft10_heldout_distill.json"),
    ("PreResNet-29 with distillation in the fine-tuning too: both gradual arms, 3 seeds",
     "equal_macs_after_d29_b100_ft10_ftkd.md",
     "python bench/equal_macs.py --threads 1 --depth 29 --protocols after --seeds 0,1,2 --baseline-epochs 100 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_d29_b100 --rarts-l1 0 --rarts-cost-weight 2 "
     "--rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 --search-distill 1 --finetune-distill 1 "
     "--gradual-methods rarts,l1_norm --methods rarts,l1_norm --out bench/results/equal_macs_after_d29_b100_ft10_ftkd.json"),
    ("PreResNet-29 with distilled fine-tuning: gradual RARTS against the one-shot l1-norm, 3 seeds",
     "equal_macs_after_d29_b100_ft10_ftkd_oneshot.md",
     "python bench/equal_macs.py --threads 1 --depth 29 --protocols after --seeds 0,1,2 --baseline-epochs 100 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_d29_b100 --rarts-l1 0 --rarts-cost-weight 2 "
     "--rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 --search-distill 1 --finetune-distill 1 "
     "--gradual-methods rarts --methods rarts,l1_norm --out bench/results/equal_macs_after_d29_b100_ft10_ftkd_oneshot.json"),
    ("PreResNet-29 with distilled fine-tuning, on the unseen test images", "equal_macs_after_d29_b100_ft10_heldout_ftkd.md",
     "python bench/heldout_eval.py --threads 1 --depth 29 --work runs/pq_d29_b100 "
     "--out bench/results/equal_macs_after_d29_b100_ft10_heldout_ftkd.json"),
    ("A model no setting was chosen on: PreResNet-29 (100-epoch baseline, 68.5 %), gradual RARTS against the "
     "one-shot l1-norm, 3 seeds", "equal_macs_after_d29_b100_ft10.md",
     "python bench/equal_macs.py --threads 1 --depth 29 --protocols after --seeds 0,1,2 --baseline-epochs 100 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_d29_b100 --rarts-l1 0 --rarts-cost-weight 2 "
     "--rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 --gradual-methods rarts --methods rarts,l1_norm "
     "--out bench/results/equal_macs_after_d29_b100_ft10.json"),
    ("PreResNet-29: gradual RARTS against the same schedule by weight magnitude", "equal_macs_after_d29_b100_ft10_gradual_both.md",
     "python bench/equal_macs.py --threads 1 --depth 29 --protocols after --seeds 0,1,2 --baseline-epochs 100 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_d29_b100 --rarts-l1 0 --rarts-cost-weight 2 "
     "--rarts-arch-lr 0.01 --rarts-importance l1_norm --gradual 0.5 --gradual-methods rarts,l1_norm "
     "--methods rarts,l1_norm --no-control --out bench/results/equal_macs_after_d29_b100_ft10_gradual_both.json"),
    ("PreResNet-29 on the unseen test images", "equal_macs_after_d29_b100_ft10_heldout.md",
     "python bench/heldout_eval.py --threads 2 --depth 29 --work runs/pq_d29_b100 "
     "--out bench/results/equal_macs_after_d29_b100_ft10_heldout.json"),
    ("From scratch at equal training compute with RARTS' fused update (two passes a step, 1.7 plain epochs an "
     "epoch): RARTS 20 epochs against plain training for 35 then the l1-norm or random, 3 seeds (2026-12-06)",
     "equal_macs_scratch_equal_compute_fused.md",
     "python bench/equal_macs.py --threads 1 --protocols scratch --seeds 0,1,2 --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/pq_scratch_eq "
     "--methods rarts,l1_norm,random --rarts-update fused --out bench/results/equal_macs_scratch_equal_compute_fused.json"),
    ("The from-scratch runs at equal compute (exact and fused RARTS, the classic arms after 10 and 35 epochs) on "
     "the unseen and on all test images, 3 seeds", "equal_macs_scratch_equal_compute_heldout.md",
     "python bench/heldout_eval.py --threads 1 --protocol scratch_swap --work runs/pq_scratch_eq --seeds 0,1,2 "
     "--out bench/results/equal_macs_scratch_equal_compute_heldout.json"),
    ("The fused update at equal compute with a 4th seed (run afterwards, nothing changed)",
     "equal_macs_scratch_equal_compute_fused_4seeds.md",
     "python bench/equal_macs.py --threads 1 --protocols scratch --seeds 0,1,2,3 --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/pq_scratch_eq "
     "--methods rarts,l1_norm,random --rarts-update fused --out bench/results/equal_macs_scratch_equal_compute_fused_4seeds.json"),
    ("The same 4 seeds on the unseen and on all test images", "equal_macs_scratch_equal_compute_heldout_4seeds.md",
     "python bench/heldout_eval.py --threads 1 --protocol scratch_swap --work runs/pq_scratch_eq --seeds 0,1,2,3 "
     "--out bench/results/equal_macs_scratch_equal_compute_heldout_4seeds.json"),
    ("The fused update at equal compute with a 5th seed (run afterwards, nothing changed)",
     "equal_macs_scratch_equal_compute_fused_5seeds.md",
     "python bench/equal_macs.py --threads 2 --protocols scratch --seeds 0,1,2,3,4 --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/pq_scratch_eq "
     "--methods rarts,l1_norm,random --rarts-update fused --out bench/results/equal_macs_scratch_equal_compute_fused_5seeds.json"),
    ("The same 5 seeds on the unseen and on all test images", "equal_macs_scratch_equal_compute_heldout_5seeds.md",
     "python bench/heldout_eval.py --threads 2 --protocol scratch_swap --work runs/pq_scratch_eq --seeds 0,1,2,3,4 "
     "--out bench/results/equal_macs_scratch_equal_compute_heldout_5seeds.json"),
    ("The same 5 seeds with the fine-tuning chosen per run on 5,000 unused training images: the 5 epochs, or "
     "none (the same runs finalized with --finetune-epochs 0 in runs/pq_scratch_ft0, from the same searches "
     "and plain networks)", "equal_macs_scratch_equal_compute_selected_5seeds.md",
     "python bench/heldout_eval.py --threads 1 --protocol scratch_swap --work runs/pq_scratch_eq --select-from "
     "runs/pq_scratch_ft0 --methods '^(rarts_fused|l1_norm_e35|random_e35)$' --control control_e35 --seeds 0,1,2,3,4 "
     "--out bench/results/equal_macs_scratch_equal_compute_selected_5seeds.json"),
    ("The same 5 seeds with `PruneJob.val_images=5000`: every arm keeps the fine-tuning epoch (0 to 5) that 5,000 "
     "unused training images score best", "equal_macs_scratch_equal_compute_val5000.md",
     "python bench/equal_macs.py --threads 1 --protocols scratch --seeds 0,1,2,3,4 --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/pq_scratch_eq "
     "--methods rarts,l1_norm,random --rarts-update fused --val-images 5000 "
     "--out bench/results/equal_macs_scratch_equal_compute_val5000.json"),
    ("`val_images=5000`, on the unseen and on all test images", "equal_macs_scratch_equal_compute_val5000_heldout.md",
     "python bench/heldout_eval.py --threads 1 --protocol scratch_swap --work runs/pq_scratch_eq --methods _val5000 "
     "--control control_e35 --seeds 0,1,2,3,4 --out bench/results/equal_macs_scratch_equal_compute_val5000_heldout.json"),
    ("Network Slimming at the same equal compute (35 sparsity epochs, `val_images=5000`), 5 seeds",
     "equal_macs_scratch_equal_compute_val5000_slimming.md",
     "python bench/equal_macs.py --threads 1 --protocols scratch --seeds 0,1,2,3,4 --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/pq_scratch_eq --methods slimming "
     "--rarts-update fused --val-images 5000 --no-control "
     "--out bench/results/equal_macs_scratch_equal_compute_val5000_slimming.json"),
    ("Slimming beside RARTS, the l1-norm and random, on the unseen and on all test images (merged with the "
     "re-evaluation above)", "equal_macs_scratch_equal_compute_val5000_slimming_heldout.md",
     "python bench/heldout_eval.py --threads 1 --protocol scratch_swap --work runs/pq_scratch_eq --methods slimming "
     "--seeds 0,1,2,3,4 --merge bench/results/equal_macs_scratch_equal_compute_val5000_heldout.json "
     "--out bench/results/equal_macs_scratch_equal_compute_val5000_slimming_heldout.json"),
    ("A second network, VGG-11 at half width, from scratch at equal compute with `val_images=5000` (the "
     "PreResNet-20's flags unchanged), 3 seeds", "equal_macs_scratch_equal_compute_val5000_vgg11x0.5.md",
     "python bench/equal_macs.py --model vgg11x0.5 --threads 1 --protocols scratch --seeds 0,1,2 --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/vgg_scratch_eq "
     "--methods rarts,l1_norm,random --rarts-update fused --val-images 5000 "
     "--out bench/results/equal_macs_scratch_equal_compute_val5000_vgg11x0.5.json"),
    ("VGG-11 from scratch, on the unseen and on all test images",
     "equal_macs_scratch_equal_compute_val5000_vgg11x0.5_heldout.md",
     "python bench/heldout_eval.py --threads 1 --model vgg11x0.5 --protocol scratch_swap --work runs/vgg_scratch_eq "
     "--methods '^(rarts_fused|l1_norm|random)_val5000(_e35)?$' --control control_e35 --seeds 0,1,2 "
     "--out bench/results/equal_macs_scratch_equal_compute_val5000_vgg11x0.5_heldout.json"),
    ("VGG-11 from scratch, lever: the scores' LR on the weights' schedule (`--rarts-score-schedule weights`, "
     "`PruneJob.score_schedule`), otherwise as above, 3 seeds",
     "equal_macs_scratch_equal_compute_val5000_schedw_vgg11x0.5.md",
     "python bench/equal_macs.py --model vgg11x0.5 --threads 1 --protocols scratch --seeds 0,1,2 --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/vgg_scratch_eq "
     "--methods rarts,l1_norm,random --rarts-update fused --val-images 5000 --rarts-score-schedule weights "
     "--out bench/results/equal_macs_scratch_equal_compute_val5000_schedw_vgg11x0.5.json"),
    ("VGG-11 from scratch, lever: RARTS prunes after 9 search epochs and trains the pruned network with the rest of "
     "the classic arms' training MACs (`--scratch-prune-at 9`), 3 seeds", "equal_macs_scratch_early9_vgg11x0.5.md",
     "python bench/equal_macs.py --model vgg11x0.5 --threads 1 --protocols scratch --seeds 0,1,2 --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/vgg_scratch_eq "
     "--methods rarts,l1_norm,random --rarts-update fused --val-images 5000 --scratch-prune-at 9 "
     "--out bench/results/equal_macs_scratch_early9_vgg11x0.5.json"),
    ("The ablation of that lever: the l1-norm on the same early schedule (seed 0)",
     "equal_macs_scratch_early9_l1_vgg11x0.5.md",
     "python bench/equal_macs.py --model vgg11x0.5 --threads 1 --protocols scratch --seeds 0 --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/vgg_scratch_eq "
     "--methods rarts,l1_norm --rarts-update fused --val-images 5000 --scratch-prune-at 9 "
     "--early-methods rarts,l1_norm --out bench/results/equal_macs_scratch_early9_l1_vgg11x0.5.json"),
    ("VGG-11 from scratch, every lever's arms on the unseen and on all test images",
     "equal_macs_scratch_levers_vgg11x0.5_heldout.md",
     "python bench/heldout_eval.py --threads 2 --model vgg11x0.5 --protocol scratch_swap --work runs/vgg_scratch_eq "
     "--methods '^(rarts_fused|rarts_fused_schedw|l1_norm|random)_val5000(_e35|_early9)?$' --control control_e35 "
     "--seeds 0,1,2 --out bench/results/equal_macs_scratch_levers_vgg11x0.5_heldout.json"),
    ("VGG-11 from scratch, lever: plain training, then one RARTS search epoch at the same training MACs "
     "(`--scratch-warm-search 1`), 3 seeds", "equal_macs_scratch_warm1_vgg11x0.5.md",
     "python bench/equal_macs.py --model vgg11x0.5 --threads 1 --protocols scratch --seeds 0,1,2 --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/vgg_scratch_eq "
     "--methods rarts,l1_norm,random --rarts-update fused --val-images 5000 --scratch-warm-search 1 "
     "--out bench/results/equal_macs_scratch_warm1_vgg11x0.5.json"),
    ("VGG-11 from scratch: the ranking or the network? Re-ranked searches (`--rarts-importance normalized` / "
     "`l1_norm`, `--rarts-scope layer`), `--rarts-cost-weight 8` (seed 0), the warm search, the l1-norm's early "
     "schedule (seeds 0, 1), on the unseen and on all test images",
     "equal_macs_scratch_allocation_vgg11x0.5_heldout.md",
     "python bench/heldout_eval.py --threads 2 --model vgg11x0.5 --protocol scratch_swap --work runs/vgg_scratch_eq "
     "--methods '^(rarts_fused_val5000(_impnormalized|_impl1_norm|_scopelayer|_warm1|_early9)?|"
     "rarts_cost_weight8_fused_val5000|l1_norm_val5000_(e35|early9)|random_val5000_e35)$' --control control_e35 "
     "--seeds 0,1,2 --out bench/results/equal_macs_scratch_allocation_vgg11x0.5_heldout.json"),
    ("VGG-11 from scratch, lever: warm early pruning. RARTS trains plainly 16 epochs, searches one epoch at the "
     "search LR, prunes where the early l1-norm arm prunes (after 18 plain epochs' MACs) and trains the pruned "
     "network like it with the rest of the classic arms' training MACs (`--scratch-prune-at 9 --scratch-warm-search "
     "1`), 3 seeds", "equal_macs_scratch_early9_warm1_vgg11x0.5.md",
     "python bench/equal_macs.py --model vgg11x0.5 --threads 1 --protocols scratch --seeds 0,1,2 --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/vgg_scratch_eq "
     "--methods rarts,l1_norm --rarts-update fused --val-images 5000 --scratch-prune-at 9 --early-methods "
     "rarts,l1_norm --scratch-warm-search 1 --out bench/results/equal_macs_scratch_early9_warm1_vgg11x0.5.json"),
    ("The same on the unseen and on all test images, with RARTS searching from scratch on the early schedule",
     "equal_macs_scratch_early9_warm1_vgg11x0.5_heldout.md",
     "python bench/heldout_eval.py --threads 2 --model vgg11x0.5 --protocol scratch_swap --work runs/vgg_scratch_eq "
     "--methods '^(rarts_fused_val5000_early9(_warm1)?|l1_norm_val5000_early9)$' --control control_e35 "
     "--seeds 0,1,2 --out bench/results/equal_macs_scratch_early9_warm1_vgg11x0.5_heldout.json"),
    ("The check of that lever: random pruning on the same early schedule, 3 seeds",
     "equal_macs_scratch_early9_random_vgg11x0.5.md",
     "python bench/equal_macs.py --model vgg11x0.5 --threads 1 --protocols scratch --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/vgg_scratch_eq --rarts-update "
     "fused --val-images 5000 --methods random --scratch-prune-at 9 --early-methods random --seeds 0,1,2 "
     "--no-control --out bench/results/equal_macs_scratch_early9_random_vgg11x0.5.json"),
    ("Network Slimming on the same early schedule: sparsity training for the plain epochs' 18, then the pruned "
     "network trained like the others, 3 seeds", "equal_macs_scratch_early9_slimming_vgg11x0.5.md",
     "python bench/equal_macs.py --model vgg11x0.5 --threads 1 --protocols scratch --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/vgg_scratch_eq --rarts-update "
     "fused --val-images 5000 --methods slimming --scratch-prune-at 9 --early-methods slimming --seeds 0,1,2 "
     "--no-control --out bench/results/equal_macs_scratch_early9_slimming_vgg11x0.5.json"),
    ("Warm early RARTS against every classic criterion on the early schedule, on the unseen and on all test images",
     "equal_macs_scratch_early9_classic_vgg11x0.5_heldout.md",
     "python bench/heldout_eval.py --threads 2 --model vgg11x0.5 --protocol scratch_swap --work runs/vgg_scratch_eq "
     "--methods '^(rarts_fused_val5000_early9_warm1|l1_norm_val5000_early9|random_val5000_early9|"
     "slimming_val5000_early9)$' --control control_e35 --seeds 0,1,2 "
     "--out bench/results/equal_macs_scratch_early9_classic_vgg11x0.5_heldout.json"),
    ("The after-training levers on the warm early schedule: no MACs weighting and the kept scores reset "
     "(`--rarts-cost-weight 0 --rarts-l1 4e-3 --rarts-kept-scores reset`), 3 seeds",
     "equal_macs_scratch_early9_warm1_cw0_reset_vgg11x0.5.md",
     "python bench/equal_macs.py --model vgg11x0.5 --threads 1 --protocols scratch --seeds 0,1,2 --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/vgg_scratch_eq --methods rarts "
     "--rarts-update fused --val-images 5000 --scratch-prune-at 9 --early-methods rarts --scratch-warm-search 1 "
     "--rarts-cost-weight 0 --rarts-l1 4e-3 --rarts-kept-scores reset --no-control "
     "--out bench/results/equal_macs_scratch_early9_warm1_cw0_reset_vgg11x0.5.json"),
    ("The same against every arm of that schedule, on the unseen and on all test images",
     "equal_macs_scratch_early9_cw0_reset_vgg11x0.5_heldout.md",
     "python bench/heldout_eval.py --threads 2 --model vgg11x0.5 --protocol scratch_swap --work runs/vgg_scratch_eq "
     "--methods '^(rarts_fused_val5000_early9_warm1|rarts_l10.004_cost_weight0_fused_val5000_reset_early9_warm1|"
     "l1_norm_val5000_early9|random_val5000_early9|slimming_val5000_early9)$' --control control_e35 --seeds 0,1,2 "
     "--out bench/results/equal_macs_scratch_early9_cw0_reset_vgg11x0.5_heldout.json"),
    ("VGG-11 at half width after training (the 30-epoch baseline, `prune()`'s budget defaults, 5 fine-tuning epochs "
     "at LR 0.01), 3 seeds", "equal_macs_after_vgg11x0.5.md",
     "python bench/equal_macs.py --threads 1 --model vgg11x0.5 --protocols after --seeds 0,1,2 --work runs/pq "
     "--methods rarts,l1_norm,random --out bench/results/equal_macs_after_vgg11x0.5.json"),
    ("VGG-11 after training with Network Slimming (the same runs plus slimming's sparsity epoch), 3 seeds",
     "equal_macs_after_slimming_vgg11x0.5.md",
     "python bench/equal_macs.py --threads 1 --model vgg11x0.5 --protocols after --seeds 0,1,2 --work runs/pq "
     "--methods rarts,slimming,l1_norm,random --out bench/results/equal_macs_after_slimming_vgg11x0.5.json"),
    ("The same on the unseen and on all test images, with RARTS' gradual job default (`--gradual 0.5`)",
     "equal_macs_after_slimming_vgg11x0.5_heldout.md",
     "python bench/heldout_eval.py --threads 1 --model vgg11x0.5 --work runs/pq --seeds 0,1,2 "
     "--methods '^(rarts|rarts_gradual0.5|slimming|l1_norm|random)$' "
     "--out bench/results/equal_macs_after_slimming_vgg11x0.5_heldout.json"),
    ("VGG-11 after training, each run keeping the fine-tuning epoch that 5,000 held-out training images score best "
     "(`--val-images 5000`): RARTS (the scores folded, the default), Network Slimming and the l1-norm, 3 seeds",
     "equal_macs_after_val5000_vgg11x0.5.md",
     "python bench/equal_macs.py --threads 1 --model vgg11x0.5 --protocols after --seeds 0,1,2 --work runs/pq "
     "--methods rarts,slimming,l1_norm --val-images 5000 --out bench/results/equal_macs_after_val5000_vgg11x0.5.json"),
    ("The same RARTS searches finalized with the kept scores reset to +-1 (`--rarts-kept-scores reset`)",
     "equal_macs_after_val5000_reset_vgg11x0.5.md",
     "python bench/equal_macs.py --threads 1 --model vgg11x0.5 --protocols after --seeds 0,1,2 --work runs/pq "
     "--methods rarts --no-control --val-images 5000 --rarts-kept-scores reset "
     "--out bench/results/equal_macs_after_val5000_reset_vgg11x0.5.json"),
    ("RARTS searching with slimming's kind of pressure: no MACs weighting, an l1 pressure of 4e-3 "
     "(`--rarts-cost-weight 0 --rarts-l1 4e-3`)", "equal_macs_after_val5000_cw0_vgg11x0.5.md",
     "python bench/equal_macs.py --threads 1 --model vgg11x0.5 --protocols after --seeds 0,1,2 --work runs/pq "
     "--methods rarts --no-control --val-images 5000 --rarts-cost-weight 0 --rarts-l1 4e-3 "
     "--out bench/results/equal_macs_after_val5000_cw0_vgg11x0.5.json"),
    ("Both levers together: no MACs weighting and the kept scores reset", "equal_macs_after_val5000_cw0_reset_vgg11x0.5.md",
     "python bench/equal_macs.py --threads 1 --model vgg11x0.5 --protocols after --seeds 0,1,2 --work runs/pq "
     "--methods rarts --no-control --val-images 5000 --rarts-cost-weight 0 --rarts-l1 4e-3 --rarts-kept-scores reset "
     "--out bench/results/equal_macs_after_val5000_cw0_reset_vgg11x0.5.json"),
    ("Both levers with a three-epoch search (`--search-epochs 3`, 93 steps at the fine-tuning LR; the runs' folders "
     "get the suffix _se3)", "equal_macs_after_val5000_se3_cw0_reset_vgg11x0.5.md",
     "python bench/equal_macs.py --threads 1 --model vgg11x0.5 --protocols after --seeds 0,1,2 --work runs/pq "
     "--methods rarts --no-control --val-images 5000 --search-epochs 3 --rarts-cost-weight 0 --rarts-l1 4e-3 "
     "--rarts-kept-scores reset --out bench/results/equal_macs_after_val5000_se3_cw0_reset_vgg11x0.5.json"),
    ("Network Slimming with three sparsity epochs, the same length", "equal_macs_after_val5000_se3_slimming_vgg11x0.5.md",
     "python bench/equal_macs.py --threads 1 --model vgg11x0.5 --protocols after --seeds 0,1,2 --work runs/pq "
     "--methods slimming --no-control --val-images 5000 --search-epochs 3 "
     "--out bench/results/equal_macs_after_val5000_se3_slimming_vgg11x0.5.json"),
    ("The three-epoch arms with two more seeds (3, 4: the same two commands with `--seeds 3` and `--seeds 4`), "
     "5 seeds, on the unseen and on all test images", "equal_macs_after_val5000_se3_5seeds_vgg11x0.5_heldout.md",
     "python bench/heldout_eval.py --threads 2 --model vgg11x0.5 --work runs/pq --seeds 0,1,2,3,4 --methods '_se3$' "
     "--out bench/results/equal_macs_after_val5000_se3_5seeds_vgg11x0.5_heldout.json"),
    ("VGG-11 after training at equal *parameters* (`--budget-kind params`, 3 seeds; 2026-12-07)",
     "equal_macs_after_val5000_params_vgg11x0.5.md",
     "python bench/equal_macs.py --threads 1 --model vgg11x0.5 --protocols after --seeds 0,1,2 --work runs/pq "
     "--no-control --val-images 5000 --budget-kind params --methods rarts,slimming,l1_norm,random "
     "--out bench/results/equal_macs_after_val5000_params_vgg11x0.5.json"),
    ("The same without RARTS' cost pressure (`--rarts-cost-weight 0`)", "equal_macs_after_val5000_params_cw0_vgg11x0.5.md",
     "python bench/equal_macs.py --threads 1 --model vgg11x0.5 --protocols after --seeds 0,1,2 --work runs/pq "
     "--no-control --val-images 5000 --budget-kind params --methods rarts --rarts-cost-weight 0 "
     "--out bench/results/equal_macs_after_val5000_params_cw0_vgg11x0.5.json"),
    ("Both on the unseen and on all test images", "equal_macs_after_val5000_params_vgg11x0.5_heldout.md",
     "python bench/heldout_eval.py --threads 1 --model vgg11x0.5 --work runs/pq --seeds 0,1,2 --budget-kind params "
     "--out bench/results/equal_macs_after_val5000_params_vgg11x0.5_heldout.json"),
    ("PreResNet-20 after training at equal *parameters* (the same flags, its 30-epoch baseline; 3 seeds; 2026-12-07)",
     "equal_macs_after_val5000_params_d20.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --work runs/pq --no-control "
     "--val-images 5000 --budget-kind params --methods rarts,slimming,l1_norm,random "
     "--out bench/results/equal_macs_after_val5000_params_d20.json"),
    ("The same without RARTS' cost pressure (`--rarts-cost-weight 0`)", "equal_macs_after_val5000_params_cw0_d20.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --work runs/pq --no-control "
     "--val-images 5000 --budget-kind params --methods rarts --rarts-cost-weight 0 "
     "--out bench/results/equal_macs_after_val5000_params_cw0_d20.json"),
    ("These on the unseen and on all test images", "equal_macs_after_val5000_params_d20_heldout.md",
     "python bench/heldout_eval.py --threads 2 --work runs/pq --seeds 0,1,2 --budget-kind params "
     "--out bench/results/equal_macs_after_val5000_params_d20_heldout.json"),
    ("VGG-11 from scratch at equal *parameters* and equal training compute (RARTS 20 fused search epochs, the "
     "classic arms 35; 3 seeds; 2026-12-07)", "equal_macs_scratch_equal_compute_val5000_params_vgg11x0.5.md",
     "python bench/equal_macs.py --model vgg11x0.5 --threads 1 --protocols scratch --seeds 0,1,2 --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/vgg_scratch_eq "
     "--methods rarts,slimming,l1_norm,random --rarts-update fused --val-images 5000 --budget-kind params "
     "--out bench/results/equal_macs_scratch_equal_compute_val5000_params_vgg11x0.5.json"),
    ("The same with RARTS warm (33 plain epochs, then one search epoch: `--scratch-warm-search 1`)",
     "equal_macs_scratch_warm1_params_vgg11x0.5.md",
     "python bench/equal_macs.py --model vgg11x0.5 --threads 1 --protocols scratch --seeds 0,1,2 --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/vgg_scratch_eq --methods rarts "
     "--rarts-update fused --val-images 5000 --budget-kind params --no-control --scratch-warm-search 1 "
     "--out bench/results/equal_macs_scratch_warm1_params_vgg11x0.5.json"),
    ("Both on the unseen and on all test images", "equal_macs_scratch_params_vgg11x0.5_heldout.md",
     "python bench/heldout_eval.py --threads 1 --model vgg11x0.5 --protocol scratch_swap --work runs/vgg_scratch_eq "
     "--budget-kind params --control control_e35 --seeds 0,1,2 --methods '_warm1$' --merge "
     "bench/results/equal_macs_scratch_equal_compute_val5000_params_vgg11x0.5_heldout.json "
     "--out bench/results/equal_macs_scratch_params_vgg11x0.5_heldout.json"),
    ("A third network, torchvision's MobileNetV2 at half width with CIFAR strides (2026-12-08; no setting chosen on "
     "it): after training, every arm's fine-tuning chosen on 5,000 held-out training images",
     "equal_macs_after_val5000_mobilenetv2x0.5.md",
     "python bench/equal_macs.py --threads 1 --model mobilenetv2x0.5 --protocols after --baseline-epochs 100 "
     "--work runs/pq_mnv2 --methods rarts,slimming,l1_norm,random --val-images 5000 --seeds 0,1,2 "
     "--out bench/results/equal_macs_after_val5000_mobilenetv2x0.5.json"),
    ("The same searches, the kept scores reset to +-1 at the surgery (`--rarts-kept-scores reset`)",
     "equal_macs_after_val5000_reset_mobilenetv2x0.5.md",
     "python bench/equal_macs.py --threads 1 --model mobilenetv2x0.5 --protocols after --baseline-epochs 100 "
     "--work runs/pq_mnv2 --methods rarts --no-control --val-images 5000 --seeds 0,1,2 --rarts-kept-scores reset "
     "--out bench/results/equal_macs_after_val5000_reset_mobilenetv2x0.5.json"),
    ("MobileNetV2 on the unseen and on all test images", "equal_macs_after_val5000_mobilenetv2x0.5_heldout.md",
     "python bench/heldout_eval.py --threads 2 --model mobilenetv2x0.5 --work runs/pq_mnv2 --seeds 0,1,2 "
     "--methods _val5000 --out bench/results/equal_macs_after_val5000_mobilenetv2x0.5_heldout.json"),
    ("The reset arm on the unseen and on all test images (merged with the table above)",
     "equal_macs_after_val5000_reset_mobilenetv2x0.5_heldout.md",
     "python bench/heldout_eval.py --threads 1 --model mobilenetv2x0.5 --work runs/pq_mnv2 --seeds 0,1,2 "
     "--methods _val5000_reset --merge bench/results/equal_macs_after_val5000_mobilenetv2x0.5_heldout.json "
     "--out bench/results/equal_macs_after_val5000_reset_mobilenetv2x0.5_heldout.json"),
    ("MobileNetV2 from scratch at equal training compute (RARTS 20 fused epochs, the classic arms 35), 3 seeds",
     "equal_macs_scratch_equal_compute_val5000_mobilenetv2x0.5.md",
     "python bench/equal_macs.py --model mobilenetv2x0.5 --threads 1 --protocols scratch --seeds 0,1,2 --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/mnv2_scratch --rarts-update fused "
     "--val-images 5000 --methods rarts,slimming,l1_norm,random "
     "--out bench/results/equal_macs_scratch_equal_compute_val5000_mobilenetv2x0.5.json"),
    ("MobileNetV2 from scratch, every arm's selection capped per layer (`--max-pruning-ratio 0.9`; the same searches)",
     "equal_macs_scratch_equal_compute_val5000_cap0.9_mobilenetv2x0.5.md",
     "python bench/equal_macs.py --model mobilenetv2x0.5 --threads 1 --protocols scratch --seeds 0,1,2 --scratch-epochs 20 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/mnv2_scratch --rarts-update fused "
     "--val-images 5000 --methods rarts,slimming --no-control "
     "--max-pruning-ratio 0.9 --out bench/results/equal_macs_scratch_equal_compute_val5000_cap0.9_mobilenetv2x0.5.json"),
    ("MobileNetV2 from scratch on the unseen and on all test images",
     "equal_macs_scratch_equal_compute_val5000_mobilenetv2x0.5_heldout.md",
     "python bench/heldout_eval.py --threads 1 --model mobilenetv2x0.5 --protocol scratch_swap --work runs/mnv2_scratch "
     "--methods _val5000 --control control_e35 --seeds 0,1,2 "
     "--out bench/results/equal_macs_scratch_equal_compute_val5000_mobilenetv2x0.5_heldout.json"),
    ("PreResNet-20 after training on the job's default path (gradual, distilled), kept scores folded, 3 seeds",
     "equal_macs_after_val5000_jobdefault_d20.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --work runs/pq --methods rarts --no-control "
     "--val-images 5000 --gradual 0.5 --search-distill 1 --finetune-distill 1 "
     "--out bench/results/equal_macs_after_val5000_jobdefault_d20.json"),
    ("The same searches with the kept scores reset (`--rarts-kept-scores reset`)",
     "equal_macs_after_val5000_jobdefault_reset_d20.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --work runs/pq --methods rarts --no-control "
     "--val-images 5000 --gradual 0.5 --search-distill 1 --finetune-distill 1 --rarts-kept-scores reset "
     "--out bench/results/equal_macs_after_val5000_jobdefault_reset_d20.json"),
    ("MobileNetV2 after training: Network Slimming with a cap per layer (`--max-pruning-ratio 0.9`), 3 seeds",
     "equal_macs_after_val5000_slimming_cap0.9_mobilenetv2x0.5.md",
     "python bench/equal_macs.py --threads 1 --model mobilenetv2x0.5 --protocols after --baseline-epochs 100 "
     "--work runs/pq_mnv2 --methods slimming --no-control --val-images 5000 --seeds 0,1,2 --max-pruning-ratio 0.9 "
     "--out bench/results/equal_macs_after_val5000_slimming_cap0.9_mobilenetv2x0.5.json"),
    ("MobileNetV2 after training, the capped slimming on the unseen and on all test images",
     "equal_macs_after_val5000_slimming_cap0.9_mobilenetv2x0.5_heldout.md",
     "python bench/heldout_eval.py --threads 1 --model mobilenetv2x0.5 --work runs/pq_mnv2 --seeds 0,1,2 "
     "--methods _val5000_cap0.9 --merge bench/results/equal_macs_after_val5000_reset_mobilenetv2x0.5_heldout.json "
     "--out bench/results/equal_macs_after_val5000_slimming_cap0.9_mobilenetv2x0.5_heldout.json"),
    ("Channel criteria against the oracle on MobileNetV2 (2026-12-08; settings not tuned on it)",
     "criterion_quality_mobilenetv2x0.5.md",
     "python bench/criterion_quality.py --threads 1 --model mobilenetv2x0.5 --work runs/pq_mnv2 --search-epochs 1 "
     "--budgets 0.6,0.35 --variants default,slimming --out bench/results/criterion_quality_mobilenetv2x0.5.json"),
    ("PreResNet-20 after training with the fine-tuning chosen on held-out training images: the kept scores folded "
     "(the default) or reset", "equal_macs_after_val5000_d20.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --work runs/pq --methods rarts "
     "--no-control --val-images 5000 --out bench/results/equal_macs_after_val5000_d20.json"),
    ("The same searches with `--rarts-kept-scores reset`", "equal_macs_after_val5000_reset_d20.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --work runs/pq --methods rarts "
     "--no-control --val-images 5000 --rarts-kept-scores reset --out bench/results/equal_macs_after_val5000_reset_d20.json"),
    ("RARTS' two networks at the end of those from-scratch searches: y, w and their average, on held-out training "
     "images", "two_nets_scratch_params_vgg11x0.5.md",
     "python bench/two_nets.py --threads 1 --model vgg11x0.5 --budgets 0.6,0.35 "
     "runs/vgg_scratch_eq/equal_macs_vgg11x0.5/scratch_swap/rarts_fused_params_s{0,1,2}_search "
     "--out bench/results/two_nets_scratch_params_vgg11x0.5.json"),
    ("These arms on the unseen and on all test images", "equal_macs_after_val5000_vgg11x0.5_heldout.md",
     "python bench/heldout_eval.py --threads 2 --model vgg11x0.5 --work runs/pq --seeds 0,1,2 --methods _val5000 "
     "--out bench/results/equal_macs_after_val5000_vgg11x0.5_heldout.json"),
    ("VGG-11 after training, on the unseen and on all test images", "equal_macs_after_vgg11x0.5_heldout.md",
     "python bench/heldout_eval.py --threads 1 --model vgg11x0.5 --work runs/pq --seeds 0,1,2 "
     "--out bench/results/equal_macs_after_vgg11x0.5_heldout.json"),
    ("What one from-scratch epoch costs on VGG-11 at half width: plain training vs RARTS' search (fused, exact)",
     "epoch_cost_vgg11x0.5.md",
     "python bench/epoch_cost.py --threads 1 --model vgg11x0.5 --rounds 3 --out bench/results/epoch_cost_vgg11x0.5.json"),
    ("The fused update at equal epochs: RARTS fused 10 epochs from scratch (compare the exact update's 10 epochs "
     "in equal_macs_scratch_equal_compute_3seeds.md), 3 seeds", "equal_macs_scratch_fused_equal_epochs.md",
     "python bench/equal_macs.py --threads 1 --protocols scratch --seeds 0,1,2 --scratch-epochs 10 "
     "--finetune-epochs 5 --finetune-lr 0.01 --work runs/pq_scratch_fused10 --methods rarts --no-control "
     "--rarts-update fused --out bench/results/equal_macs_scratch_fused_equal_epochs.json"),
    ("From scratch at equal training compute, 3 seeds (2026-12-06): RARTS 10 epochs against plain training for 35 "
     "then the l1-norm or random", "equal_macs_scratch_equal_compute_3seeds.md",
     "python bench/equal_macs.py --threads 1 --protocols scratch --seeds 0,1,2 --scratch-epochs 10 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/pq_scratch_eq "
     "--methods rarts,l1_norm,random --out bench/results/equal_macs_scratch_equal_compute_3seeds.json"),
    ("From scratch at equal training compute: RARTS 10 epochs against plain training for 35 (a RARTS epoch costs "
     "about 3.3 plain ones) then the l1-norm or random, one seed (2026-12-06)", "equal_macs_scratch_equal_compute.md",
     "python bench/equal_macs.py --threads 1 --protocols scratch --seeds 0 --scratch-epochs 10 "
     "--scratch-classic-epochs 35 --finetune-epochs 5 --finetune-lr 0.01 --work runs/pq_scratch_eq "
     "--methods rarts,l1_norm,random --out bench/results/equal_macs_scratch_equal_compute.json"),
    ("From scratch at equal epochs, rerun in a fresh checkout (RARTS and the l1-norm, seeds 0-1)",
     "equal_macs_scratch_swap_rerun.md",
     "python bench/equal_macs.py --threads 1 --protocols scratch --seeds 0,1 --scratch-epochs 10 "
     "--finetune-epochs 5 --finetune-lr 0.01 --work runs/pq_scratch_eq --methods rarts,l1_norm --no-control "
     "--out bench/results/equal_macs_scratch_swap_rerun.json"),
    ("Width search at equal MACs, the search is the training, 3 seeds (every arm's kept net sees every image once "
     "per epoch, `search_split=\"swap\"`; RARTS' score LR from `SCORE_TRAVEL`)", "equal_macs_scratch_swap.md",
     "python bench/equal_macs.py --threads 1 --protocols scratch --seeds 0,1,2 "
     "--out bench/results/equal_macs_scratch_swap.json"),
    ("Ablation: the network RARTS trained from scratch, ranked by the ℓ1-norm of its weights instead of its scores",
     "equal_macs_scratch_swap_rarts_l1norm.md",
     "python bench/equal_macs.py --threads 1 --protocols scratch --seeds 0,1,2 --methods rarts --no-control "
     "--rarts-importance l1_norm --out bench/results/equal_macs_scratch_swap_rarts_l1norm.json"),
    ("Width search at equal MACs, after training, 3 seeds, a converged baseline (100 epochs), 10 fine-tuning "
     "epochs from the baseline's last LR, 0.001 (2026-12-05)", "equal_macs_after_b100_ft1e-3.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --baseline-epochs 100 "
     "--finetune-epochs 10 --finetune-lr 0.001 --work runs/pq_b100_ft1e-3 "
     "--out bench/results/equal_macs_after_b100_ft1e-3.json"),
    ("Width search at equal MACs, after training, 3 seeds, a converged baseline (100 epochs) and 10 fine-tuning "
     "epochs (2026-12-05)", "equal_macs_after_b100.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --baseline-epochs 100 "
     "--finetune-epochs 10 --work runs/pq_b100 --out bench/results/equal_macs_after_b100.json"),
    ("Width search at equal MACs, after training, 3 seeds, rerun 2026-12-04 (every arm of a seed in one process, "
     "the defaults)", "equal_macs_after_rerun.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 "
     "--out bench/results/equal_macs_after_rerun.json"),
    ("Width search at equal MACs, after training, 3 seeds, lever: `search_split=\"swap\"` for RARTS and slimming "
     "(each net sees every image once in the search epoch)", "equal_macs_after_swap.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --search-split swap "
     "--out bench/results/equal_macs_after_swap.json"),
    ("Width search at equal MACs, after training, 3 seeds: RARTS with the budget-mode defaults (MACs-weighted "
     "pressure, `cost_weight=2, l1=0`)", "equal_macs_after_3seeds_cost2.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --methods rarts --no-control "
     "--rarts-l1 0 --rarts-cost-weight 2 --out bench/results/equal_macs_after_3seeds_cost2.json"),
    ("Width search at equal MACs, after training, 3 seeds, all methods (RARTS with the ratio-mode pressure, "
     "`l1=4e-3`, the budget-mode default before 2026-12-03)", "equal_macs_after_3seeds.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --rarts-l1 0.004 --rarts-cost-weight 0 "
     "--out bench/results/equal_macs_after_3seeds.json"),
    ("Same, RARTS ranked by |α| (the former ranking) from the same searches", "equal_macs_after_3seeds_alpha.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1,2 --methods rarts --no-control "
     "--rarts-importance alpha --out bench/results/equal_macs_after_3seeds_alpha.json"),
    ("History: width search at equal MACs, after training, 2 seeds, |α| ranking", "equal_macs_after.md",
     "python bench/equal_macs.py --threads 1 --protocols after --seeds 0,1 --rarts-importance alpha "
     "--out bench/results/equal_macs_after.json"),
    ("History: width search at equal MACs, from scratch, one fixed split", "equal_macs_scratch.md",
     "python bench/equal_macs.py --threads 1 --protocols scratch --seeds 0 --out bench/results/equal_macs_scratch.json"),
    ("Width search from scratch with arch_lr=1e-2 (arch_lr x steps as in a one-epoch default search)",
     "equal_macs_scratch_arch_lr1e-2.md",
     "python bench/equal_macs.py --threads 1 --protocols scratch --seeds 0 --methods rarts --no-control "
     "--rarts-arch-lr 1e-2 --out bench/results/equal_macs_scratch_arch_lr1e-2.json"),
    ("Channel criteria against the oracle (`bench/criterion_quality.py`)", "criterion_quality.md",
     "python bench/criterion_quality.py --threads 1 --search-epochs 1 --budgets 0.6,0.35"),
    ("Channel criteria against the oracle on a second network, VGG-11 at half width (2026-12-06; settings not "
     "tuned on it)", "criterion_quality_vgg11x0.5.md",
     "python bench/criterion_quality.py --threads 1 --model vgg11x0.5 --work runs/pq --search-epochs 1 "
     "--budgets 0.6,0.35 --variants default,former_default,milenas,darts1,darts2 "
     "--out bench/results/criterion_quality_vgg11x0.5.json"),
    ("Channel criteria after 3 search epochs", "criterion_quality_e3.md",
     "python bench/criterion_quality.py --threads 1 --search-epochs 3 --budgets 0.6,0.35 "
     "--variants default,former_default,adam_lr1e-2_l1_4e-3 --out bench/results/criterion_quality_e3.json"),
    ("Channel criteria judged after fine-tuning (training images only)", "criterion_quality_ft.md",
     "python bench/criterion_quality.py --threads 1 --search-epochs 1 --budgets 0.6,0.35 --finetune-epochs 3 "
     "--finetune-budgets 0.6 --finetune-only '\\|a\\*g\\||l1_norm|random' "
     "--variants budget_default,budget_default_swap,slimming,slimming_swap --out bench/results/criterion_quality_ft.json"),
    ("Channel criteria judged after fine-tuning, 3 search epochs", "criterion_quality_ft_e3.md",
     "python bench/criterion_quality.py --threads 1 --search-epochs 3 --budgets 0.6,0.35 --finetune-epochs 3 "
     "--finetune-budgets 0.6 --finetune-only '\\|a\\*g\\||l1_norm|random' --variants budget_default,slimming "
     "--out bench/results/criterion_quality_ft_e3.json"),
    ("Channel criteria on the converged baseline (100 epochs; training images only)", "criterion_quality_b100.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --search-epochs 1 --budgets 0.6,0.35 "
     "--variants default,budget_default,slimming --out bench/results/criterion_quality_b100.json"),
    ("Channel criteria on the converged baseline: the search's weight LR (training images only)",
     "criterion_quality_b100_wlr.md",
     "python bench/criterion_quality.py --threads 1 --work runs/pq_b100 --search-epochs 1 --budgets 0.6,0.35 "
     "--variants default,budget_default,default_wlr1e-3,budget_default_wlr1e-3,budget_default_frozen_w "
     "--out bench/results/criterion_quality_b100_wlr.json"),
)


def md_section(title: str, name: str, command: str) -> list[str]:
    path = RESULTS / name
    out = [f"## {title}", ""]
    if not path.exists():
        return out + [f"Not run yet: `{command}`.", ""]
    return out + [f"{_stamp(path)}; rerun with `{command}`.", ""] + _md_body(path) + [""]


def coverage_section() -> list[str]:
    data, path = _load("coverage.json")
    out = ["## Model coverage (`bench/coverage.py`)", ""]
    if data is None:
        return out + ["Not run yet: `python bench/coverage.py`.", ""]
    rows = data["rows"]
    for suite in ("torchvision", "timm"):
        sel = [r for k, r in rows.items() if k.startswith(suite + ":")]
        if sel:
            ok = sum(1 for r in sel if r.get("ok"))
            out.append(f"- {suite}: {ok}/{len(sel)} models pass ({100 * ok / len(sel):.0f}%)")
    tasks = data.get("tasks", {})  # detection, segmentation, video, flow, timm_features rows
    for task in ("detection", "segmentation", "video", "flow", "timm_features"):
        sel = [r for r in tasks.values() if r.get("task") == task]
        if sel:
            ok = sum(1 for r in sel if r.get("ok"))
            out.append(f"- {task}: {ok}/{len(sel)} models pass ({100 * ok / len(sel):.0f}%)")
    return out + ["", f"{_stamp(path)}; the full table is on the [coverage page](coverage.md).", ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args(argv)
    lines = [
        "# Benchmarks",
        "",
        "Latest results of the scripts in `bench/` (how to run each: `bench/README.md`). Times are medians of",
        "interleaved repetitions, so ratios measured in one run are comparable even on a shared machine; absolute",
        "times are not. MACs are multiply-accumulates counted by fvcore (1 MAC = 2 FLOPs). Regenerate this page",
        "with `python bench/collect.py` after running the benchmarks.",
        "",
    ]
    for title, name, command in WIDTH_QUALITY:
        lines += md_section(title, name, command)
    lines += md_section("Width-search quality (`bench/pruning_quality.py`, former defaults: history)", "pruning_quality.md",
                        "python bench/pruning_quality.py")
    lines += md_section("Width-search quality with 10 fine-tuning epochs", "pruning_quality_ft10.md",
                        "python bench/pruning_quality.py --work runs/pq_ft10 --finetune-epochs 10 --ratios 0.4,0.6 "
                        "--methods rarts,darts1,darts2,milenas,l1_norm,slimming,random --importances '' "
                        "--out bench/results/pruning_quality_ft10.json")
    lines += md_section("Width-search pilot: 4 search epochs, PRC 60%", "pruning_quality_search4_r60.md",
                        "python bench/pruning_quality.py --work runs/pq_s4 --search-epochs 4 --ratios 0.6 "
                        "--methods rarts,l1_norm --layer-scope-methods '' --no-control --importances '' "
                        "--out bench/results/pruning_quality_search4_r60.json")
    lines += md_section("Real speed-up against the MACs ratio (`bench/speedup.py`, independent rounds)", "speedup.md",
                        "python bench/speedup.py --threads 1 --rounds 6")
    lines += md_section("Predicted vs measured latency (`bench/latency_model.py`)", "latency_model.md",
                        "python bench/latency_model.py --threads 1")
    lines += md_section("Predicted vs measured latency, the calibrated remainder (not the default)",
                        "latency_model_calibrated.md", "python bench/latency_model.py --threads 1 (tables measured "
                        "with calibrate=True)")
    lines += md_section("Predicted vs measured latency, the table fitted to measured points (batch 1)",
                        "latency_model_fitted_b1.md", "python bench/latency_model.py --threads 1 --models "
                        "resnet50,mobilenet_v2 --batches 1 --tables plain,fitted "
                        "--out bench/results/latency_model_fitted_b1.json")
    lines += md_section("Predicted vs measured latency, fitted table, MobileNetV2 at batch 32",
                        "latency_model_fitted_mnv2_b32.md", "python bench/latency_model.py --threads 1 --models "
                        "mobilenet_v2 --batches 32 --tables plain,fitted "
                        "--out bench/results/latency_model_fitted_mnv2_b32.json")
    lines += md_section("Accuracy at equal latency (`bench/equal_latency.py`)", "equal_latency.md",
                        "python bench/equal_latency.py --threads 1 --seeds 0,1,2")
    lines += md_section("Accuracy at equal latency, batch 1", "equal_latency_b1.md",
                        "python bench/equal_latency.py --threads 1 --latency-batch 1 --seeds 0,1,2 "
                        "--out bench/results/equal_latency_b1.json")
    lines += md_section("Accuracy at equal latency, searched (RARTS, pressure in latency units vs MACs)",
                        "equal_latency_rarts.md", "python bench/equal_latency.py --threads 1 --method rarts "
                        "--seeds 0,1,2 --work runs/pq --out bench/results/equal_latency_rarts.json")
    lines += md_section("Accuracy at equal latency, searched, batch 1", "equal_latency_rarts_b1.md",
                        "python bench/equal_latency.py --threads 1 --method rarts --latency-batch 1 --seeds 0,1,2 "
                        "--work runs/pq --out bench/results/equal_latency_rarts_b1.json")
    lines += md_section("Detection recipe (`recipes/detection.py`)", "detection_recipe.md",
                        "python recipes/detection.py --threads 1")
    lines += md_section("Speed-up, PreResNet-164 in channels_last", "speedup_preresnet164_channels_last.md",
                        "python bench/speedup.py --models preresnet164 --channels-last "
                        "--out bench/results/speedup_preresnet164_channels_last.json")
    lines += step_cost_section()
    lines += md_section("Distillation's cost per width-search step (`bench/distill_cost.py`, interleaved)",
                        "distill_cost.md", "python bench/distill_cost.py")
    lines += overhead_section()
    lines += md_section("NATS-Bench topology search quality (`bench/nats_quality.py`)", "nats_quality.md",
                        "python bench/nats_quality.py --seeds 0 1 2 3 4")
    lines += md_section("NATS-Bench proxy search, held-out seeds", "nats_quality_heldout.md",
                        "python bench/nats_quality.py --seeds 5 6 --out bench/results/nats_quality_heldout.json "
                        "--md bench/results/nats_quality_heldout.md")
    lines += coverage_section()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
