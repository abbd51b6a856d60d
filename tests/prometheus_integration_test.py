#!/usr/bin/env python3
"""Starts three synthgrad_layer services, a synthgrad_coordinator and
Debian's prometheus on loopback, trains a short DNI job, and checks through
Prometheus's HTTP API that every target is up, the training-sample rate is
positive, the staleness histograms have observations and the
synthetic-gradient cosine lies in [-1, 1]. It also checks the exposition
text of every process against Prometheus naming conventions.

Usage: prometheus_integration_test.py BUILD_DIR SOURCE_DIR
       prometheus_integration_test.py --self_test   (checks the naming checks)
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

GROUPS = 3
# Label names that would carry a per-batch or per-step value.
FORBIDDEN_LABEL_WORDS = ("batch", "step")
# Unit suffixes that are not base units.
NON_BASE_UNITS = ("_ms", "_milliseconds", "_microseconds", "_us", "_minutes",
                  "_hours", "_kb", "_mb", "_kilobytes", "_megabytes", "_percent")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_file(path, process, name, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return int(open(path).read().strip())
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} at start-up")
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not write {path} within {timeout} s")


def http_get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def query(prometheus, expr):
    url = f"http://{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.loads(http_get(url))
    if body["status"] != "success":
        raise RuntimeError(f"query {expr} failed: {body}")
    return body["data"]["result"]


def check_exposition(name, text):
    """Returns a list of naming problems in one process's /metrics text."""
    problems = []
    types = {}
    for line in text.splitlines():
        match = re.match(r"# TYPE (\S+) (\S+)", line)
        if match:
            types[match.group(1)] = match.group(2)
    for family, kind in types.items():
        if not family.startswith("synthgrad_"):
            continue  # exposer_* families belong to prometheus-cpp itself.
        if family.endswith("_total") != (kind == "counter"):
            problems.append(f"{name}: {family} is a {kind}; only counters end in _total")
        if any(family.endswith(unit) or (unit + "_") in family for unit in NON_BASE_UNITS):
            problems.append(f"{name}: {family} is not in base units")
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith("synthgrad_"):
            continue
        series = line.split(" ")[0]
        metric = series.split("{")[0]
        labels = re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', series)
        for label in labels:
            if label == "le" and not metric.endswith("_bucket"):
                problems.append(f"{name}: {series} has a label named le")
            if any(word in label for word in FORBIDDEN_LABEL_WORDS):
                problems.append(f"{name}: {series} has a per-batch label {label}")
        if not types:
            problems.append(f"{name}: no # TYPE lines")
    return problems


def self_test():
    """Feeds the naming checks expositions that break each rule."""
    good = ("# TYPE synthgrad_x_total counter\nsynthgrad_x_total{mode=\"train\"} 1\n"
            "# TYPE synthgrad_y_seconds histogram\n"
            "synthgrad_y_seconds_bucket{le=\"0.1\"} 1\n")
    bad = {
        "gauge ending in _total": "# TYPE synthgrad_a_total gauge\nsynthgrad_a_total 1\n",
        "counter without _total": "# TYPE synthgrad_a counter\nsynthgrad_a 1\n",
        "milliseconds": "# TYPE synthgrad_latency_ms gauge\nsynthgrad_latency_ms 1\n",
        "le on a gauge": "# TYPE synthgrad_a gauge\nsynthgrad_a{le=\"1\"} 1\n",
        "batch id label": "# TYPE synthgrad_a gauge\nsynthgrad_a{batch_id=\"7\"} 1\n",
        "step label": "# TYPE synthgrad_a gauge\nsynthgrad_a{step=\"7\"} 1\n",
    }
    failures = []
    if check_exposition("good", good):
        failures.append(f"good exposition flagged: {check_exposition('good', good)}")
    for case, text in bad.items():
        if not check_exposition(case, text):
            failures.append(f"{case} not flagged")
    for failure in failures:
        print("FAILED:", failure)
    print("PASSED" if not failures else "")
    return 1 if failures else 0


def main():
    if sys.argv[1:] == ["--self_test"]:
        return self_test()
    build_dir, source_dir = sys.argv[1], sys.argv[2]
    prometheus_binary = shutil.which("prometheus")
    if prometheus_binary is None:
        print("FAILED: Debian's prometheus is not installed (apt-get install prometheus)")
        return 1

    work = tempfile.mkdtemp(prefix="synthgrad-prometheus-")
    processes = []
    try:
        def start(name, args):
            log = open(os.path.join(work, name + ".log"), "w")
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
            processes.append((name, process))
            return process

        group_addresses, metrics = [], {}
        for i in range(GROUPS):
            name = f"group-{i}"
            process = start(name, [
                f"{build_dir}/services/layer/synthgrad_layer", "--port=0",
                f"--port_file={work}/{name}.port", "--metrics_port=0",
                f"--metrics_port_file={work}/{name}.metrics"])
            group_addresses.append(
                f"127.0.0.1:{wait_for_file(f'{work}/{name}.port', process, name)}")
            metrics[name] = wait_for_file(f"{work}/{name}.metrics", process, name)
        process = start("coordinator", [
            f"{build_dir}/services/coordinator/synthgrad_coordinator", "--port=0",
            f"--port_file={work}/coordinator.port", "--metrics_port=0",
            f"--metrics_port_file={work}/coordinator.metrics"])
        coordinator = f"127.0.0.1:{wait_for_file(f'{work}/coordinator.port', process, 'coordinator')}"
        metrics["coordinator"] = wait_for_file(f"{work}/coordinator.metrics", process, "coordinator")

        config = ["global:", "  scrape_interval: 1s", "  evaluation_interval: 1s",
                  "scrape_configs:",
                  "  - job_name: synthgrad-coordinator", "    static_configs:",
                  f"      - targets: ['127.0.0.1:{metrics['coordinator']}']",
                  "  - job_name: synthgrad-group", "    static_configs:"]
        for i in range(GROUPS):
            config += [f"      - targets: ['127.0.0.1:{metrics[f'group-{i}']}']",
                       f"        labels: {{group: '{i}'}}"]
        with open(f"{work}/prometheus.yml", "w") as f:
            f.write("\n".join(config) + "\n")
        prometheus = f"127.0.0.1:{free_port()}"
        start("prometheus", [prometheus_binary, f"--config.file={work}/prometheus.yml",
                             f"--storage.tsdb.path={work}/tsdb",
                             f"--web.listen-address={prometheus}"])

        # Training only starts once Prometheus scrapes every target, so the
        # counters are seen rising.
        deadline = time.time() + 60
        while True:
            try:
                up = query(prometheus, 'up{job=~"synthgrad-.*"} == 1')
                if len(up) == GROUPS + 1:
                    break
            except OSError:
                pass  # Prometheus is still starting.
            if time.time() > deadline:
                print("FAILED: Prometheus did not scrape every target within 60 s")
                return 1
            time.sleep(0.5)

        # Several seconds of training, so several scrapes see it.
        train = subprocess.run([
            f"{build_dir}/services/ctl/synthgradctl", "train",
            f"--spec={source_dir}/configs/fashion_mnist_smoke.textproto",
            f"--coordinator={coordinator}",
            "--group_addresses=" + ",".join(group_addresses),
            "--epochs=6", "--train_limit=20000"], capture_output=True, text=True,
            timeout=300)
        print(train.stdout)
        if train.returncode != 0:
            print(f"FAILED: synthgradctl train exited {train.returncode}: {train.stderr}")
            return 1
        time.sleep(3)  # At least two more scrapes after the job.

        failures = []
        up = query(prometheus, 'up{job=~"synthgrad-.*"}')
        if len(up) != GROUPS + 1:
            failures.append(f"expected {GROUPS + 1} targets, Prometheus has {len(up)}")
        for sample in up:
            if sample["value"][1] != "1":
                failures.append(f"target {sample['metric']['instance']} is down")

        rate = query(prometheus, "max_over_time(rate(synthgrad_coordinator_training_samples_total[5s])[1m:1s])")
        if not rate or float(rate[0]["value"][1]) <= 0:
            failures.append(f"training-sample rate is not positive: {rate}")
        else:
            print(f"max training-sample rate: {float(rate[0]['value'][1]):.0f} samples/s")

        for name in ("steps", "seconds"):
            counts = query(prometheus, f"synthgrad_group_gradient_staleness_{name}_count")
            observed = {s["metric"]["group"]: float(s["value"][1]) for s in counts}
            for group in ("0", "1"):
                if observed.get(group, 0) <= 0:
                    failures.append(f"staleness_{name} of group {group} has no observations: {observed}")

        cosines = query(prometheus, "synthgrad_group_synthetic_gradient_cosine")
        seen = 0
        for sample in cosines:
            value = float(sample["value"][1])
            if sample["metric"]["group"] in ("0", "1"):
                seen += 1
                if not -1.0 <= value <= 1.0:
                    failures.append(f"cosine of group {sample['metric']['group']} is {value}")
                print(f"group {sample['metric']['group']} synthetic-gradient cosine {value:.3f}")
        if seen != 2:
            failures.append(f"expected a cosine from groups 0 and 1, got {cosines}")

        for name, port in metrics.items():
            failures += check_exposition(name, http_get(f"http://127.0.0.1:{port}/metrics"))

        for failure in failures:
            print("FAILED:", failure)
        if failures:
            return 1
        print("PASSED: Prometheus saw every target, the sample rate, staleness and cosine")
        return 0
    finally:
        for name, process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for name, process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        if os.environ.get("SYNTHGRAD_KEEP_LOGS"):
            print("logs kept in", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
