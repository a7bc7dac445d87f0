"""Print the benchmark's table from a results directory that bench/run.sh filled.

    python3 bench/report.py RESULTS_DIR

Reads RESULTS_DIR/<phase>.txt (wrk's output; bench/routes.lua's done() adds one
`BENCH_JSON {...}` line; list and baseline-list run in rounds, <phase>-<round>.txt, and
the round with the median throughput stands for the phase) and RESULTS_DIR/meta.txt (`key=value` lines: the machine, the
settings, the service's memory). Writes RESULTS_DIR/results.json, prints the table, and
exits 1 if any request failed (a non-2xx answer or a socket error), since every number
must come from a run without errors.
"""

import json
import re
import sys
from pathlib import Path

# (phase file, label in the table)
ROWS = [
    ("list", "list (20 tasks)"),
    ("baseline-list", "baseline list (bench/baseline.py)"),
    ("get", "get one"),
    ("create", "create"),
    ("patch", "PATCH"),
    ("complete", "complete"),
    ("signup", "signup (bcrypt)"),
    ("list-idle", "list, idle (probe)"),
    ("list-under-signup", "list, while signups run"),
    ("signup-under-list", "signup, while lists run"),
]


def load(path: Path) -> dict | None:
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("BENCH_JSON "):
            result = json.loads(line.removeprefix("BENCH_JSON "))
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            result["error_count"] = sum(result["errors"].values())
            cpu_file = path.with_suffix(".cpu")
            if cpu_file.exists():  # CPU seconds the phase cost, per request
                cpu = dict(item.split("=") for item in cpu_file.read_text().split())
                per_request = 1e6 / int(cpu["clk_tck"]) / max(result["requests"], 1)
                result["service_cpu_us"] = int(cpu["service_ticks"]) * per_request
                result["db_cpu_us"] = int(cpu["pg_ticks"]) * per_request
            return result
    raise SystemExit(f"bench/report.py: no BENCH_JSON line in {path}: wrk failed?\n{path.read_text()}")


def load_phase(results_dir: Path, phase: str) -> dict | None:
    """The phase's result; of several rounds, the median one by throughput, with all rounds' errors."""
    paths = sorted(path for path in results_dir.glob(f"{phase}-*.txt") if re.fullmatch(rf"{re.escape(phase)}-[0-9]+", path.stem))
    rounds = [load(path) for path in paths]
    if not rounds:
        return load(results_dir / f"{phase}.txt")
    median = sorted(rounds, key=lambda result: result["rps"])[len(rounds) // 2]
    errors = {}
    for result in rounds:
        for kind, count in result["errors"].items():
            errors[kind] = errors.get(kind, 0) + count
    return {**median, "errors": errors, "error_count": sum(errors.values()), "rounds_rps": [round(r["rps"], 1) for r in rounds]}


def ms(microseconds: float) -> str:
    return f"{microseconds / 1000:.1f}"


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def main() -> None:
    results_dir = Path(sys.argv[1])
    meta = {}
    for line in (results_dir / "meta.txt").read_text().splitlines():
        key, _, value = line.partition("=")
        meta[key.strip()] = value.strip()
    results = {phase: load_phase(results_dir, phase) for phase, _ in ROWS}

    print()
    print(f"machine: {meta.get('cpu', '?')}, {meta.get('nproc', '?')} cores, {meta.get('memory', '?')}, {meta.get('kernel', '?')}")
    print(
        f"load average (1, 5, 15 min) before the run: {meta.get('load_before', '?')}; after: {meta.get('load_after', '?')} "
        "(after counts the benchmark's own signup threads; above ~1 before, other work shares the 2 cores and the numbers are noisy)"
    )
    print(f"software: {meta.get('python', '?')}; {meta.get('postgres', '?')}; {meta.get('wrk', '?')}")
    print(f"uvicorn: {meta.get('uvicorn', '?')} (service and baseline alike); service LOG_LEVEL={meta.get('log_level', '?')}, writing its line per request")
    print(
        f"load: wrk, {meta.get('connections', '?')} connections, {meta.get('wrk_threads', '?')} thread(s), "
        f"{meta.get('duration', '?')} s per route ({meta.get('signup_duration', '?')} s for signup) after {meta.get('warmup', '?')} s warm-up; "
        f"{meta.get('users', '?')} users x {meta.get('tasks', '?')} tasks, one token per user; only 127.0.0.1"
    )
    print()
    header = f"{'route':<36} {'requests/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'CPU µs/req':>10} {'DB µs/req':>9}"
    print(header)
    print("-" * len(header))
    for phase, label in ROWS:
        result = results[phase]
        if result is None:
            continue
        cpu = f"{result['service_cpu_us']:>10.0f} {result['db_cpu_us']:>9.0f}" if "service_cpu_us" in result else ""
        print(f"{label:<36} {result['rps']:>10.1f} {ms(result['latency_us']['p50']):>8} {ms(result['latency_us']['p99']):>8} {result['error_count']:>7} {cpu}")
    print("CPU µs/req: CPU time of the service (or baseline) process per request; DB µs/req: of the PostgreSQL backends serving it.")
    for phase, label in ROWS:
        if results[phase] and "rounds_rps" in results[phase]:
            print(f"{label}: median of {len(results[phase]['rounds_rps'])} alternating rounds, requests/s {results[phase]['rounds_rps']}")
    print()

    summary = {}
    base = results["baseline-list"]
    if base:
        for phase in ("list", "get", "patch"):
            result = results[phase]
            if result is None:
                continue
            throughput = result["rps"] / base["rps"]
            p99 = result["latency_us"]["p99"] / base["latency_us"]["p99"]
            summary[f"{phase}_vs_baseline"] = {"throughput": throughput, "p99": p99}
            name = "list" if phase == "list" else f"{phase} (vs the baseline's list)"
            print(
                f"service / baseline, {name}: throughput {throughput:.2f}x (target >= 1.2x, {verdict(throughput >= 1.2)}), "
                f"p99 {p99:.2f}x (target <= 1.0x, {verdict(p99 <= 1.0)})"
            )
    idle, loaded = results["list-idle"], results["list-under-signup"]
    if idle and loaded:
        ratio = loaded["latency_us"]["p99"] / idle["latency_us"]["p99"]
        summary["list_p99_under_signup_vs_idle"] = ratio
        signups = results["signup-under-list"]
        line = (
            f"list p99 while signups run at full speed: {ms(loaded['latency_us']['p99'])} ms vs {ms(idle['latency_us']['p99'])} ms idle "
            f"= {ratio:.2f}x (target <= 2x, {verdict(ratio <= 2)})"
        )
        if signups:
            line += f"; list {loaded['rps']:.0f}/s vs {idle['rps']:.0f}/s idle, signups meanwhile {signups['rps']:.1f}/s"
        print(line)
    peak_kb, end_kb = int(meta.get("service_vmhwm_kb", 0)), int(meta.get("service_vmrss_kb", 0))
    summary["service_peak_rss_mb"] = peak_kb / 1024
    print(
        f"service RSS: peak {peak_kb / 1024:.0f} MB (VmHWM), {end_kb / 1024:.0f} MB at the end "
        f"(target < 150 MB, {verdict(end_kb / 1024 < 150 and peak_kb / 1024 < 150)}); "
        f"baseline peak {int(meta.get('baseline_vmhwm_kb', 0)) / 1024:.0f} MB"
    )

    errors = {phase: r["errors"] for phase, r in results.items() if r and r["error_count"]}
    (results_dir / "results.json").write_text(json.dumps({"meta": meta, "results": results, "summary": summary}, indent=2))
    if errors:
        print(f"\nFAILED: requests failed, so these numbers do not count: {json.dumps(errors)}")
        sys.exit(1)
    print("\nerrors: none (no non-2xx answer, no socket error, in any phase)")


if __name__ == "__main__":
    main()
