"""Soak test of the linter: big real trees, hostile trees, huge files, fuzzing.

    python benchmarks/soak.py --minutes 10                    # everything
    python benchmarks/soak.py --minutes 2 --trees PATH ...    # other trees
    python benchmarks/soak.py --minutes 1 --no-trees          # fuzz + hostile only

For each tree: files checked, internal errors, wall time, peak RSS (the
largest single process: the main one or a worker). Then the issue-11 hostile
tree (every case must get its message), a 50 MB list literal (peak RSS with
the default budgets and with ``max-file-bytes`` off, where ``max-file-memory``
must hold), and ``--minutes`` of fuzzing in a child process (so a crash is
seen, not suffered): mutated real files (the repository's own sources and
fixtures, plus the stdlib) and hypothesmith programs. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STDLIB = Path(os.__file__).resolve().parent
SITE = Path(next(p for p in sys.path if p.endswith("site-packages"))) if any(
    p.endswith("site-packages") for p in sys.path) else None
DEFAULT_TREES = [p for p in (STDLIB, SITE / "torch" if SITE else None, SITE) if p is not None and p.is_dir()]

# Runs the CLI, then reports the peak RSS of itself and of its largest child (a worker).
_MEASURED = """
import resource, sys
from ckptlint.cli import main
try:
    code = main(sys.argv[1:])
finally:
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    sys.stderr.write(f"\\nSOAK-RSS {max(me, kids)}\\n")
sys.exit(code)
"""


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO))


def measured_check(args: list[str], cwd: Path, timeout: float) -> dict[str, object]:
    """``ckptlint check ARGS`` in a subprocess: status, time, peak RSS, files, errors."""
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", _MEASURED, "check", *args], cwd=cwd, env=_env(),
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "wall_s": round(time.monotonic() - start, 1)}
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    rss = re.search(r"SOAK-RSS (\d+)", err)
    files = re.search(r"\((\d+) files? checked\)", out)
    return {
        "status": proc.returncode,
        "wall_s": round(time.monotonic() - start, 1),
        "peak_rss_mb": round(int(rss.group(1)) / 1024) if rss else None,
        "files": int(files.group(1)) if files else None,
        "internal_errors": err.count("internal error while checking"),
        "other_errors": len(re.findall(r"^ckptlint: error:", err, re.M)),
        "ckp001": len(re.findall(r": CKP001 ", out)),
        "ckp003": len(re.findall(r": CKP003 ", out)),
        "tracebacks": err.count("Traceback"),
    }


def soak_trees(trees: list[Path], jobs: int) -> dict[str, object]:
    return {str(t): measured_check(["--no-cache", "-j", str(jobs), "--isolated", str(t)], REPO, 3600) for t in trees}


def soak_hostile() -> dict[str, object]:
    from tests.reliability.hostile import build_hostile_tree

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        expects = build_hostile_tree(root)
        try:
            result = measured_check(["-j", "2", "."], root, 300)
            proc = subprocess.run([sys.executable, "-m", "ckptlint", "check", "-j", "2", "--format", "json", "."],
                                  cwd=root, env=_env(), capture_output=True, timeout=300)
            found = {(f["path"], f["code"]) for f in json.loads(proc.stdout or b"[]")}
            err = proc.stderr.decode("utf-8", "replace")
            missing = [e.path for e in expects
                       if (e.code and (e.path, e.code) not in found) or (e.stderr and e.stderr not in err)]
        finally:
            (root / "secret").chmod(0o755)
    return {**result, "cases": len(expects), "missing": missing}


def soak_huge(megabytes: int = 50) -> dict[str, object]:
    """A ``megabytes`` MB list literal: default budgets, then with max-file-bytes off."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = random.Random(0)
        with open(root / "table.py", "w") as fh:
            fh.write("from torch.utils.checkpoint import checkpoint\nT = [\n")
            written = 0
            while written < megabytes * 1_000_000:
                row = ", ".join(str(rng.randrange(10**6)) for _ in range(16)) + ",\n"
                fh.write(row)
                written += len(row)
            fh.write("]\n")
        out = {"size_bytes": (root / "table.py").stat().st_size}
        out["default_budgets"] = measured_check(["--no-cache", "table.py"], root, 600)
        (root / "pyproject.toml").write_text("[tool.ckptlint]\nmax-file-bytes = 0\nmax-file-memory = 1024\n")
        out["size_budget_off_memory_1GiB"] = measured_check(["--no-cache", "table.py"], root, 600)
    return out


def _fuzz_worker(seconds: float, seed: int, extra: list[str]) -> None:
    """In a child: lint mutated files and hypothesmith programs until time is up; print counts."""
    import hypothesmith
    from hypothesis import HealthCheck, given, settings

    from ckptlint.engine import lint
    from tests.reliability.hostile import mutate, seed_files

    seeds = seed_files(tuple(Path(p) for p in extra))
    rng = random.Random(seed)
    counts = {"mutation": 0, "hypothesmith": 0, "internal_errors": 0, "exceptions": 0}
    failures: list[str] = []
    deadline = time.monotonic() + seconds
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        target = Path(tmp) / "mutant.py"

        def check(data: bytes, kind: str, origin: str) -> None:
            target.write_bytes(data)
            try:
                result = lint([str(target)])
            except Exception as exc:  # the property: this never happens
                counts["exceptions"] += 1
                failures.append(f"{kind} {origin}: {exc!r}")
            else:
                if result.errors:
                    counts["internal_errors"] += 1
                    failures.append(f"{kind} {origin}: {result.errors[0][1].strip().splitlines()[-1]}")
            counts[kind] += 1

        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(hypothesmith.from_grammar() | hypothesmith.from_node())
        def programs(source: str) -> None:
            check(source.encode("utf-8", "surrogatepass"), "hypothesmith", "generated")

        while time.monotonic() < deadline:
            for _ in range(20):
                seed_file = rng.choice(seeds)
                check(mutate(seed_file.read_bytes(), rng), "mutation", f"{seed_file} (seed {seed})")
            programs()
    print(json.dumps({**counts, "failures": failures[:20]}))


def soak_fuzz(minutes: float, extra: list[str]) -> dict[str, object]:
    seed = int(time.time())
    args = [sys.executable, __file__, "--fuzz-worker", str(minutes * 60), str(seed), *extra]
    proc = subprocess.run(args, env=_env(), capture_output=True, timeout=minutes * 60 + 600)
    if proc.returncode != 0:
        return {"status": proc.returncode, "seed": seed, "stderr": proc.stderr.decode()[-2000:]}
    return {"status": 0, "seed": seed, **json.loads(proc.stdout.decode().strip().splitlines()[-1])}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--fuzz-worker":
        _fuzz_worker(float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="fuzzing time (default 5)")
    parser.add_argument("--trees", nargs="*", type=Path, default=DEFAULT_TREES, help="real trees to check")
    parser.add_argument("--no-trees", action="store_true", help="skip the real trees")
    parser.add_argument("--no-huge", action="store_true", help="skip the 50 MB file")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    report: dict[str, object] = {}

    def done(key: str, value: object) -> None:
        report[key] = value
        print(json.dumps({key: value}), file=sys.stderr, flush=True)  # progress: a long run shows each part

    if not args.no_trees:
        trees: dict[str, object] = {}
        for tree in args.trees:
            trees[str(tree)] = soak_trees([tree], args.jobs)[str(tree)]
            done(f"tree {tree}", trees[str(tree)])
        report["trees"] = trees
    done("hostile", soak_hostile())
    if not args.no_huge:
        done("huge_50mb", soak_huge())
    done("fuzz", soak_fuzz(args.minutes, [str(STDLIB)]))
    print(json.dumps(report, indent=2))
    failed = report["hostile"]["missing"] or report["fuzz"].get("status") or report["fuzz"].get("exceptions")  # type: ignore[index, union-attr]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
