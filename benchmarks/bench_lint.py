#!/usr/bin/env python
"""Speed and memory of ckptlint on real model zoos, beside ruff and TorchFix.

For each package (default: transformers, diffusers, timm) the script fetches
the wheel with ``pip download`` into a cache folder outside the repository
(``--work-dir``, default ``~/.cache/ckptlint-bench``), unpacks it, and times on
the package's source tree:

* ``ckptlint check --no-cache`` (cold), then a run that fills the cache, then
  a warm run (cached);
* ``ruff check --select ALL --no-cache`` when ruff is installed;
* ``torchfix`` when installed, under ``--timeout`` (reported as "timeout").

Peak RSS is measured two ways: the largest single process of the tool's
process tree (``wait4``'s ``ru_maxrss``, which covers waited-for
descendants), and the sum over the tree sampled every 50 ms with psutil when
it is installed (a pooled run's real footprint). Output is a markdown table.

    python benchmarks/bench_lint.py                    # all three, all tools
    python benchmarks/bench_lint.py --packages timm --tools ckptlint ruff
    python benchmarks/bench_lint.py --wheel-dir /tmp/zoo/dl   # reuse wheels
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

try:
    import psutil
except ImportError:  # the sampled tree RSS is optional
    psutil = None

DEFAULT_PACKAGES = ("transformers", "diffusers", "timm")
DEFAULT_TOOLS = ("ckptlint", "ruff", "torchfix")


@dataclass
class Measurement:
    package: str
    files: int
    lines: int
    tool: str
    mode: str
    wall: float | None  # None: timed out / failed
    max_rss_mb: float | None
    tree_rss_mb: float | None
    note: str = ""
    cpu: float | None = None  # user + system seconds of the process tree


    def row(self) -> str:
        wall = "timeout" if self.note == "timeout" else ("failed" if self.wall is None else f"{self.wall:.1f}")
        rate = f"{self.files / self.wall:.0f}" if self.wall else "-"
        mx = f"{self.max_rss_mb:.0f}" if self.max_rss_mb else "-"
        tree = f"{self.tree_rss_mb:.0f}" if self.tree_rss_mb else "-"
        note = "" if self.note == "timeout" else self.note
        cpu = f"{self.cpu:.1f}" if self.cpu else "-"
        return (
            f"| {self.package} | {self.files:,} | {self.lines:,} | {self.tool} | {self.mode} | {wall} | "
            f"{cpu} | {rate} | {mx} | {tree} | {note} |"
        )


HEADER = (
    "| package | files | lines | tool | mode | wall s | CPU s | files/s | peak RSS MB (max process) "
    "| peak RSS MB (tree sum) | note |\n|---|---:|---:|---|---|---:|---:|---:|---:|---:|---|"
)


def fetch(package: str, work: Path, wheel_dir: Path | None) -> Path:
    """Download (once) and unpack ``package``; return its source tree."""
    wheels = work / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pattern = f"{package.replace('-', '_')}-*.whl"
    found = sorted(wheels.glob(pattern))
    if not found and wheel_dir is not None:
        found = sorted(wheel_dir.glob(pattern))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(wheels), package],
            check=True,
        )
        found = sorted(wheels.glob(pattern))
    wheel = found[-1]
    dest = work / "src" / wheel.stem
    tree = dest / package.replace("-", "_")
    if not tree.is_dir():
        shutil.rmtree(dest, ignore_errors=True)
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(dest)
    return tree


def count(tree: Path) -> tuple[int, int]:
    files = lines = 0
    for path in tree.rglob("*.py"):
        files += 1
        with open(path, "rb") as fh:
            lines += fh.read().count(b"\n")
    return files, lines


def measure(
    cmd: list[str], cwd: Path, timeout: float
) -> tuple[float | None, float | None, float | None, str, float | None]:
    """Run ``cmd``; return wall seconds, max-process and sampled tree RSS (MB), note, CPU seconds."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    tree_peak = [0]
    done = threading.Event()

    def sample() -> None:
        if psutil is None:
            return
        try:
            root = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while not done.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            tree_peak[0] = max(tree_peak[0], total)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    deadline = start + timeout
    status = None
    usage = None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            done.set()
            return None, None, tree_peak[0] / 2**20 or None, "timeout", None
        time.sleep(0.02)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    reader.join(timeout=5)
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is KiB on Linux; it covers the child and descendants it waited for.
    max_rss = usage.ru_maxrss / 1024 if usage else None
    note = ""
    if proc.returncode not in (0, 1):
        err = b"".join(stderr_chunks).decode(errors="replace").strip().splitlines()
        note = f"exit {proc.returncode}: {err[-1][:80] if err else ''}"
    cpu = (usage.ru_utime + usage.ru_stime) if usage else None
    return wall, max_rss, (tree_peak[0] / 2**20) or None, note, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", nargs="+", default=list(DEFAULT_PACKAGES))
    parser.add_argument("--tools", nargs="+", default=list(DEFAULT_TOOLS), choices=DEFAULT_TOOLS)
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "ckptlint-bench")
    parser.add_argument("--wheel-dir", type=Path, default=None, help="reuse wheels from here before downloading")
    parser.add_argument("--timeout", type=float, default=900.0, help="per-command limit in seconds (TorchFix!)")
    parser.add_argument("--jobs", type=int, default=None, help="ckptlint --jobs (default: its own default)")
    parser.add_argument("--ruff-format", default="full", choices=("full", "concise"))
    parser.add_argument("--output", type=Path, default=None, help="also write the table here")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the fastest wall time is kept")
    args = parser.parse_args(argv)

    bindir = Path(sys.executable).parent
    ckptlint = [sys.executable, "-m", "ckptlint"]
    precompile()
    ruff = shutil.which("ruff", path=str(bindir)) or shutil.which("ruff")
    torchfix = shutil.which("torchfix", path=str(bindir)) or shutil.which("torchfix")
    jobs = ["--jobs", str(args.jobs)] if args.jobs else []

    rows: list[Measurement] = []
    print(HEADER, flush=True)
    for package in args.packages:
        tree = fetch(package, args.work_dir, args.wheel_dir)
        files, lines = count(tree)
        # Run from the unpacked folder so the cache lands there, not in the repo.
        cwd = tree.parent
        plan: list[tuple[str, str, list[str]]] = []
        if "ckptlint" in args.tools:
            base = [*ckptlint, "check", tree.name, "--exit-zero", "--format", "json", *jobs]
            shutil.rmtree(cwd / ".ckptlint_cache", ignore_errors=True)
            plan += [
                ("ckptlint", "cold (--no-cache)", [*base, "--no-cache"]),
                ("ckptlint", "first run, fills cache", base),
                ("ckptlint", "warm (cached)", base),
            ]
        if "ruff" in args.tools and ruff:
            plan.append(
                (
                    "ruff ALL",
                    f"--no-cache, {args.ruff_format}",
                    [ruff, "check", "--select", "ALL", "--no-cache", "--exit-zero", "--isolated",
                     "--output-format", args.ruff_format, tree.name],
                )
            )
        if "torchfix" in args.tools and torchfix:
            plan.append(("TorchFix", "default rules", [torchfix, tree.name]))
        for tool, mode, cmd in plan:
            runs = []
            for _ in range(1 if tool == "TorchFix" else args.repeat):
                if mode.startswith("first run"):
                    shutil.rmtree(cwd / ".ckptlint_cache", ignore_errors=True)
                runs.append(measure(cmd, cwd, args.timeout))
            # Fastest wall time of the repeats: other load on the machine only
            # ever adds time. Memory: the largest seen.
            done = [r for r in runs if r[0] is not None] or runs
            wall, _, _, note, cpu = min(done, key=lambda r: r[0] if r[0] is not None else float("inf"))
            mx = max((r[1] or 0 for r in runs), default=0) or None
            tree_rss = max((r[2] or 0 for r in runs), default=0) or None
            m = Measurement(package, files, lines, tool, mode, wall, mx, tree_rss, note, cpu)
            rows.append(m)
            print(m.row(), flush=True)
        for tool, found in (("ruff", ruff), ("torchfix", torchfix)):
            if tool in args.tools and not found:
                print(f"| {package} | {files:,} | {lines:,} | {tool} | - | not installed | - | - | - | - | |", flush=True)
    print(f"\nmachine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; psutil tree sampling: "
          f"{'on' if psutil else 'off (pip install psutil)'}")
    summary = targets(rows)
    if summary:
        print("\n" + summary)
    if args.output:
        args.output.write_text(
            HEADER + "\n" + "\n".join(m.row() for m in rows) + "\n" + ("\n" + summary + "\n" if summary else "")
        )
    return 0


def precompile() -> None:
    """Byte-compile ckptlint once, as pip does when it installs a wheel.

    Where ``PYTHONDONTWRITEBYTECODE`` is set (CI images and this sandbox set it) an editable checkout
    is otherwise compiled again by every run: about 0.5 s per process start that no installed copy pays.
    """
    import compileall

    import ckptlint

    compileall.compile_dir(str(Path(ckptlint.__file__).parent), quiet=1)


def targets(rows: list[Measurement]) -> str:
    """Issue 8's targets per package: cold <= 4x ruff ALL, warm < 0.5x ruff, peak RSS < 300 MB per process."""
    lines: list[str] = []
    for package in dict.fromkeys(m.package for m in rows):
        by = {(m.tool, m.mode.split()[0]): m for m in rows if m.package == package}
        ruff = next((m for m in rows if m.package == package and m.tool == "ruff ALL" and m.wall), None)
        cold = by.get(("ckptlint", "cold"))
        warm = by.get(("ckptlint", "warm"))
        if not (ruff and cold and warm and cold.wall and warm.wall):
            continue
        rss = max(m.max_rss_mb or 0 for m in (cold, warm))
        tree = max(m.tree_rss_mb or 0 for m in (cold, warm))
        lines.append(
            f"- {package}: cold {cold.wall / ruff.wall:.1f}x ruff ALL (target <= 4x: "
            f"{'met' if cold.wall <= 4 * ruff.wall else 'NOT met'}), warm {warm.wall / ruff.wall:.2f}x "
            f"(target < 0.5x: {'met' if warm.wall < 0.5 * ruff.wall else 'NOT met'}), peak RSS {rss:.0f} MB per "
            f"process / {tree:.0f} MB all processes (target < 300 MB per process: "
            f"{'met' if rss < 300 else 'NOT met'})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
