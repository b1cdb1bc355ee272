"""The before/after table of README.md from before/ptx.json and after/ptx.json:

    python bench/results/2026-12-02-layers-census/table.py
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = ("conv", "full", "subsample", "rbf", "loss", "update")


def load(which):
    with open(os.path.join(HERE, which, "ptx.json")) as f:
        entries = json.load(f)["kernels"]
    return {(e["kernel"], e["signature_index"]): e for e in entries
            if e["module"].removeprefix("kernels.") in MODULES}


def mix(m):
    return "-" if not m else f"{m['fma_f32']}/{m['instructions']} ({100 * m['fma_share']:.0f}%)"


def cells(e):
    if e is None:
        return ["(new)"] * 7
    return [str(e["registers"]), f"{e['spill_store_bytes']}/{e['spill_load_bytes']}",
            mix(e["mix"]), mix(e["loops"]["hot"]), mix(e["loops"]["inner"]),
            str(e["mix"]["int64_divrem"]), str(e["mix"]["float64_ops"])]


def main():
    before, after = load("before"), load("after")
    head = ["kernel", "registers", "spills B", "FMA / instr. (whole)", "hot loop",
            "inner loops", "64-bit div", "float64"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    order = list(after) + [k for k in before if k not in after]
    for key in order:
        b, a = before.get(key), after.get(key)
        e = a or b
        name = e["kernel"].removeprefix("kernels.")
        if e["signatures"] > 1:
            name += f" ({e['variant']})"
        bc, ac = cells(b), cells(a) if a else ["(gone)"] * 7
        row = [name] + [x if x == y else f"{x} → {y}" for x, y in zip(bc, ac, strict=True)]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
