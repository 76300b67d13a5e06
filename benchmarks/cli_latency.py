"""Wall time of the commands a user types first, beside `python -c "import torch"` in the same run.

    python benchmarks/cli_latency.py [--rounds 5]

Each command runs in a fresh interpreter; rounds are interleaved (one of each command per round) and the median
is reported with min and max, so a busy machine slows every row alike. The ratio to `import torch` says how much
of a second-long torch import a command avoids.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "advbench --help": [sys.executable, "-m", "advbench", "--help"],
    "advbench --version": [sys.executable, "-m", "advbench", "--version"],
    "advbench list defenses": [sys.executable, "-m", "advbench", "list", "defenses"],
    "advbench train --defense psatt (error)": [sys.executable, "-m", "advbench", "train", "--defense", "psatt"],
    "advbench train --eps 2 (error)": [sys.executable, "-m", "advbench", "train", "--eps", "2"],
    # what every train, attack and reproduce process pays before its first batch
    "import advbench.api": [sys.executable, "-c", "import advbench.api"],
    "advbench train (1 epoch, 64 images)": [sys.executable, "-m", "advbench", "train", "--defense", "standard",
                                            "--epochs", "1", "--n-train", "64", "--set", "val_n=32", "--device",
                                            "cpu", "--quiet", "--fresh", "--out", "{tmp}"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    with tempfile.TemporaryDirectory() as tmp:  # the training row's run folder
        for _ in range(args.rounds):
            for name, cmd in COMMANDS.items():
                t0 = time.perf_counter()
                subprocess.run([a.replace("{tmp}", tmp) for a in cmd], capture_output=True, check=False)
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["import torch"])
    print("| command | median s | min | max | x import torch |\n|---|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.2f} | {min(ts):.2f} | {max(ts):.2f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
