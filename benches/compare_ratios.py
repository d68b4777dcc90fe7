#!/usr/bin/env python3
"""Prints protogate's ratios to the peers from one run of the shared harness.

    benches/compare_ratios.py RUN_DIR [GATEWAY_NAME]

Reads RUN_DIR/results.csv (one row per round, target and scenario), takes the
median over rounds as the harness's summary does, and prints, per scenario,
protogate's gateway CPU per request and throughput against structured-proxy's
and the nginx hop's, its p99 against direct gRPC's, and its peak RSS, each
beside the issue's target so the run says at a glance which ones it meets.
"""
import csv
import statistics
import sys
from pathlib import Path


def medians(rows, target, scenario):
    picked = [r for r in rows if r["target"] == target and r["scenario"] == scenario]
    if not picked:
        return None

    def med(values):
        values = [v for v in values if v == v]
        return statistics.median(values) if values else float("nan")

    return dict(
        rps=med([float(r["rps"]) for r in picked]),
        p99=med([float(r["p99_ms"]) for r in picked]),
        rss=med([float(r["rss_kb"]) / 1024 for r in picked if r["rss_kb"]]),
        cpu=med([float(r["gw_cpu_s"]) * 1e6 / (float(r["rps"]) * float(r["duration_s"]))
                 for r in picked if r["gw_cpu_s"] and float(r["rps"]) > 0]),
        load=med([float(r["loadavg1"]) for r in picked]),
    )


def verdict(value, limit, at_most):
    if value != value:
        return "  n/a"
    ok = value <= limit if at_most else value >= limit
    return "  met" if ok else "  MISSED"


def main(argv):
    run_dir = Path(argv[1])
    name = argv[2] if len(argv) > 2 else "protogate"
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    nginx = medians(rows, "nginx", "get_h1")
    direct = medians(rows, "direct-grpc", "grpc_h2")
    lines = [f"protogate ratios (median of rounds; run {run_dir.name})", ""]
    lines.append(f"{'scenario':<9} {'vs':<17} {'CPU us/req':>22} {'CPU ratio':>10}  target      "
                 f"{'req/s':>17} {'req/s ratio':>11}  target")
    for scenario in ("get_h1", "post_h1", "get_h2c"):
        ours = medians(rows, name, scenario)
        if not ours:
            continue
        for peer_name, peer, cpu_limit, rps_limit in (
            ("structured-proxy", medians(rows, "structured-proxy", scenario), 0.5, 1.5),
            ("nginx hop", nginx, 2.0, None),
        ):
            if not peer:
                continue
            cpu_ratio = ours["cpu"] / peer["cpu"] if peer["cpu"] else float("nan")
            rps_ratio = ours["rps"] / peer["rps"] if peer["rps"] else float("nan")
            rps_target = (f"≥{rps_limit}x{verdict(rps_ratio, rps_limit, False)}"
                          if rps_limit else "")
            lines.append(
                f"{scenario:<9} {peer_name:<17} {ours['cpu']:>10.1f} vs {peer['cpu']:>8.1f} "
                f"{cpu_ratio:>9.2f}x  ≤{cpu_limit}x{verdict(cpu_ratio, cpu_limit, True):<8} "
                f"{ours['rps']:>7.0f} vs {peer['rps']:>6.0f} {rps_ratio:>10.2f}x  {rps_target}")
    lines.append("")
    for scenario in ("get_h1", "post_h1", "get_h2c"):
        ours = medians(rows, name, scenario)
        if ours and direct:
            ratio = ours["p99"] / direct["p99"]
            lines.append(f"p99 {scenario:<8} {ours['p99']:.2f} ms vs direct gRPC {direct['p99']:.2f} ms: "
                         f"{ratio:.2f}x  ≤1.5x{verdict(ratio, 1.5, True)}")
    peak = max((medians(rows, name, s) or {}).get("rss", 0) for s in ("get_h1", "post_h1", "get_h2c"))
    lines.append(f"peak RSS {peak:.1f} MiB  ≤25 MiB{verdict(peak, 25, True)}")
    loads = [float(r["loadavg1"]) for r in rows]
    if loads:
        lines.append(f"1-min load average during the run: {min(loads):.2f}–{max(loads):.2f} on "
                     "2 cores (above ~2 means other work shared the box)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
