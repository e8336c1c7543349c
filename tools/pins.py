"""The pinned stack (constraints.txt) and the smoke figures measured on it (results/smoke/expected.json).

    python tools/pins.py check constraints.txt        exit 0 when the stack's packages are at their pins, else 1
    python tools/pins.py smoke RUNS/smoke results/smoke/expected.json
                                                      the smoke run beside the pinned figures, with both stacks

run.sh calls both: `check` before it installs, `smoke` after `bash run.sh smoke` (and `UPGRADE=1 bash run.sh smoke`,
which runs on the newest releases and so shows what moving the pins would change). Standard library only: it
runs before anything is installed.
"""
import importlib.metadata
import json
import sys
from pathlib import Path

# The packages whose versions a run records (prune.stack_versions) and the README's figures name.
STACK = ("torch", "transformers", "datasets", "numpy", "tokenizers", "safetensors")
CHECKED = STACK + ("pytest", "matplotlib")


def installed(name: str):
    """The installed version without a local label (2.13.0+cpu -> 2.13.0), or None."""
    try:
        return importlib.metadata.version(name).split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return None


def pins(path: str) -> dict:
    """{package: version} of a constraints file's name==version lines (names compared lower case, - for _)."""
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[name.strip().lower().replace("_", "-")] = version.strip().split("+")[0]
    return out


def check(path: str) -> int:
    want = pins(path)
    off = [f"{n} {installed(n) or 'missing'} (pinned {want[n]})" for n in CHECKED if n in want and installed(n) != want[n]]
    if off:
        print(f"pins.py: not at the pins of {path}: {', '.join(off)}", file=sys.stderr)
    return 1 if off else 0


def smoke(runs: str, expected: str) -> int:
    """Print each smoke run's accuracy beside the pinned figure and the difference, with the two stacks."""
    pinned = json.loads(Path(expected).read_text())
    print(f"{'run':8} {'pinned':>8} {'this run':>9} {'difference':>11}")
    stack = {}
    for name, figure in pinned["accuracy"].items():
        results = json.loads((Path(runs) / name / "results.json").read_text())
        got = results["metrics"]["accuracy"]
        stack = results.get("versions", {})
        print(f"{name:8} {figure:8.4f} {got:9.4f} {got - figure:+11.4f}")
    print("pinned stack:   " + ", ".join(f"{k} {v}" for k, v in pinned["versions"].items()))
    print("this run's:     " + ", ".join(f"{k} {v}" for k, v in stack.items()))
    return 0


if __name__ == "__main__":
    usage = "usage: pins.py check CONSTRAINTS | pins.py smoke RUNS_SMOKE EXPECTED_JSON"
    if len(sys.argv) != {"check": 3, "smoke": 4}.get(sys.argv[1] if len(sys.argv) > 1 else "", 0):
        sys.exit(usage)
    sys.exit(check(sys.argv[2]) if sys.argv[1] == "check" else smoke(sys.argv[2], sys.argv[3]))
