"""docs/models.md's figures: test accuracy per epoch of each rule beside its BP twin, per network.

Reads the run folders that docs/models.md's commands write (RUNS/<rule>-<net>-<data>/metrics.jsonl)
and writes <net>-<data>.png and runs.md beside this file:

    python docs/figures/models/make_figures.py RUNS
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
NETWORKS = {"lenet5-fmnist": "LeNet-5, Fashion-MNIST", "rnn-digits": "Elman RNN (rows of 8x8 digits)"}
RULES = ("zil", "il", "fa", "kp")


def read(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def main(runs: Path) -> None:
    rows = []
    for key, title in NETWORKS.items():
        figure, axis = plt.subplots(figsize=(5.5, 3.6))
        drawn_bp = False
        for rule in RULES:
            folder = runs / f"{rule}-{key}"
            if not (folder / "metrics.jsonl").is_file():
                continue
            records = read(folder)
            epochs = [r["epoch"] for r in records]
            axis.plot(epochs, [r["test_acc"] for r in records], marker="o", label=rule)
            if not drawn_bp:
                axis.plot(epochs, [r["compare_test_acc"] for r in records], color="black", linestyle="--", label="bp (twin)")
                drawn_bp = True
            last = records[-1]
            rows.append((title, rule, len(records), last["test_acc"], last["compare_test_acc"], last["max_rel_diff"],
                         all(r["test_acc"] == r["compare_test_acc"] for r in records)))
        axis.set_xlabel("epoch")
        axis.set_ylabel("test accuracy")
        axis.set_title(title)
        axis.legend()
        figure.tight_layout()
        figure.savefig(HERE / f"{key}.png", dpi=110)
        plt.close(figure)
    lines = ["| network | rule | epochs | test acc | BP twin's | max rel weight diff | equal every epoch |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {t} | {r} | {n} | {a:.4f} | {b:.4f} | {d:.2e} | {'yes' if e else 'no'} |" for t, r, n, a, b, d, e in rows]
    (HERE / "runs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
