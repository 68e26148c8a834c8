"""The 30-seed study's bookkeeping across machines: a setting takes longer than one
session on 2 cores, and a study folder does not outlive its machine, so its finished
cells travel in the repository and the next machine picks the study up from them.

    python docs/studies/cells.py pack FOLDER OUT.jsonl.gz    finished cells -> one file
    python docs/studies/cells.py unpack FILE.jsonl.gz FOLDER  write them back (then
        `tuneloop eval ... --out FOLDER` runs only the missing cells: a cell with a
        result.json is finished)
    python docs/studies/cells.py audit FOLDER FIRST LAST [--json OUT]
        `trace state` pooled per arm over the cells of seeds FIRST..LAST (the traces stay
        on the machine that ran them, so OUT keeps the counts)
    python docs/studies/cells.py audit --combine A.json B.json ...
        the counts of several such files pooled (each arm lists the seeds it holds);
        a setting's audit.json is the pool so far

A packed cell is its result.json (the row, the anytime curve and the proposals: all that
summary.md and the plots read) and its manifest.json (the space and where it ran).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

FLAGS = ("in_failed_region", "repeat_tried", "at_bound", "ignored_incumbent")


def pack(folder: Path, out: Path) -> int:
    n = 0
    with gzip.open(out, "wt") as f:
        for d in sorted((folder / "runs").iterdir()):
            result, manifest = d / "result.json", d / "manifest.json"
            if result.exists():
                f.write(json.dumps({"cell": d.name,
                                    "manifest": json.loads(manifest.read_text()) if manifest.exists() else None,
                                    "result": json.loads(result.read_text())}) + "\n")
                n += 1
    return n


def unpack(packed: Path, folder: Path) -> int:
    n = 0
    with gzip.open(packed, "rt") as f:
        for line in f:
            cell = json.loads(line)
            d = folder / "runs" / cell["cell"]
            d.mkdir(parents=True, exist_ok=True)
            if cell["manifest"] is not None:
                (d / "manifest.json").write_text(json.dumps(cell["manifest"]))
            (d / "result.json").write_text(json.dumps(cell["result"]))  # last: the cell is finished
            n += 1
    return n


def empty() -> dict[str, Any]:
    return {"seeds": [], "turns": 0, "valid": 0, **dict.fromkeys(FLAGS, 0), "distinct": {}}


def audit(folder: Path, first: int, last: int) -> dict[str, dict[str, Any]]:
    """Per arm, named as summary.md names it (Arm.label)."""
    from tuneloop.evaluation.arms import Arm
    from tuneloop.evaluation.traces import state_audit
    from tuneloop.tools.record import read_trace

    arms: dict[str, dict[str, Any]] = {}
    for d in sorted((folder / "runs").iterdir()):
        if not (d / "result.json").exists():
            continue
        row = json.loads((d / "result.json").read_text())["row"]
        if not first <= row["seed"] <= last:
            continue
        a = state_audit(read_trace(d / "trace.jsonl"))
        label = Arm(row["method"], row["prompt"] or None, row["model"] or None).label
        c = arms.setdefault(label, empty())
        valid = [t for t in a["turns"] if not t["invalid"]]
        c["seeds"].append(row["seed"])
        c["turns"] += len(a["turns"])
        c["valid"] += len(valid)
        for flag in FLAGS:
            c[flag] += sum(bool(t[flag]) for t in valid)
        for name, k in a["distinct_by_parameter"].items():
            c["distinct"].setdefault(name, []).append(k)
    return arms


def combine(parts: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for part in parts:
        for arm, c in part.items():
            o = out.setdefault(arm, empty())
            o["seeds"] += c["seeds"]
            for k in ("turns", "valid", *FLAGS):
                o[k] += c[k]
            for name, ks in c["distinct"].items():
                o["distinct"].setdefault(name, []).extend(ks)
    return out


def show(arms: dict[str, dict[str, Any]]) -> None:
    for arm, c in sorted(arms.items()):
        n = c["valid"]
        if not n:
            continue
        shares = " ".join(f"{flag} {c[flag] / n:.0%}" for flag in FLAGS)
        distinct = ", ".join(f"{name} {sum(ks) / len(ks):.1f}" for name, ks in c["distinct"].items())
        print(f"{arm}: cells {len(c['seeds'])}, model turns {c['turns']}, invalid {(c['turns'] - n) / c['turns']:.0%}; "
              f"{shares}; distinct values per cell: {distinct}")


def main(argv: list[str]) -> None:
    match argv:
        case ["pack", folder, out]:
            print(f"packed {pack(Path(folder), Path(out))} finished cells of {folder} into {out}")
        case ["unpack", packed, folder]:
            print(f"wrote {unpack(Path(packed), Path(folder))} finished cells into {folder}")
        case ["audit", "--combine", *files]:
            show(combine([json.loads(Path(p).read_text()) for p in files]))
        case ["audit", folder, first, last, *rest]:
            arms = audit(Path(folder), int(first), int(last))
            if rest[:1] == ["--json"] and len(rest) == 2:
                Path(rest[1]).write_text(json.dumps(arms))
            show(arms)
        case _:  # a usage mistake: the usage, exit 2 as every tuneloop command
            print(__doc__, file=sys.stderr)
            sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
