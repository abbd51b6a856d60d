#!/usr/bin/env python3
"""Checks deploy/grafana/dashboard.json: valid JSON, every query parses as
PromQL (through `promtool check rules`), and every synthgrad metric it
queries is one that docs/metrics.md documents.

Usage: grafana_dashboard_test.py SOURCE_DIR
"""
import json
import re
import subprocess
import sys
import tempfile


def main():
    source_dir = sys.argv[1]
    dashboard = json.load(open(f"{source_dir}/deploy/grafana/dashboard.json"))
    documented = set(re.findall(r"`(synthgrad_[a-z_]+)`", open(f"{source_dir}/docs/metrics.md").read()))
    failures = []
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    if not expressions:
        failures.append("the dashboard has no queries")
    for expr in expressions:
        for metric in re.findall(r"\b(synthgrad_[a-z_]+)", expr):
            base = re.sub(r"_(bucket|count|sum)$", "", metric)
            if base not in documented:
                failures.append(f"{metric} in '{expr}' is not in docs/metrics.md")

    with tempfile.NamedTemporaryFile("w", suffix=".yml") as rules:
        rules.write("groups:\n  - name: dashboard\n    rules:\n")
        for i, expr in enumerate(expressions):
            rules.write(f"      - record: dashboard:query{i}\n        expr: {json.dumps(expr)}\n")
        rules.flush()
        check = subprocess.run(["promtool", "check", "rules", rules.name],
                               capture_output=True, text=True)
        if check.returncode != 0:
            failures.append("promtool rejected a query:\n" + check.stdout + check.stderr)

    for failure in failures:
        print("FAILED:", failure)
    if failures:
        return 1
    print(f"PASSED: {len(expressions)} queries parse and use documented metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
