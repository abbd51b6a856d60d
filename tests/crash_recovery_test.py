#!/usr/bin/env python3
"""Crash and restart tests with real processes on loopback.

Scenario "group": three synthgrad_layer services and a synthgrad_coordinator
train a DNI job on Fashion-MNIST with a checkpoint every 50 batches. A first
job with the same spec and folders runs to the end before, as a rerun on one
machine would. After the second checkpoint of the second job, the test
kills group 1 with SIGKILL and starts it again on the same port. The job must succeed, and the coordinator's
counters must show one recovery, every shard counted once, and exactly the
batches after the checkpoint fed again.

Scenario "coordinator": the coordinator gets SIGTERM in the middle of the
job, writes a final checkpoint and exits. A new coordinator resumes the job
with `synthgradctl train --resume`, and the job finishes with every
training example counted once. A second resume of the finished job is
rejected.

Usage: crash_recovery_test.py BUILD_DIR SOURCE_DIR
Prints PASSED when every check holds.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

GROUPS = 3
EPOCHS = 2
TRAIN_EXAMPLES = 60000
BATCH_SIZE = 256
SHARD_BATCHES = 10
CHECKPOINT_INTERVAL_SHARDS = 5
MAX_IN_FLIGHT = 2
BATCHES_PER_EPOCH = (TRAIN_EXAMPLES + BATCH_SIZE - 1) // BATCH_SIZE
SHARDS_PER_EPOCH = (BATCHES_PER_EPOCH + SHARD_BATCHES - 1) // SHARD_BATCHES
JOB_TIMEOUT_SECONDS = 400

failures = []


def check(condition, message):
    print(("ok:     " if condition else "FAILED: ") + message, flush=True)
    if not condition:
        failures.append(message)


def wait_for_port_file(path, process, name, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return int(open(path).read().strip())
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} at start-up")
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not write {path} within {timeout} s")


def metric_value(text, name):
    match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


class Cluster:
    """The processes of one scenario, all stopped by close()."""

    def __init__(self, build_dir, work):
        self.build_dir = build_dir
        self.work = work
        self.processes = {}
        self.group_ports = {}
        self.coordinator_port = None
        self.metrics_port = None

    def start(self, name, args):
        log = open(os.path.join(self.work, name + ".log"), "a")
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def start_group(self, i, port=0):
        port_file = os.path.join(self.work, f"group-{i}.port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        process = self.start(f"group-{i}", [
            os.path.join(self.build_dir, "services/layer/synthgrad_layer"),
            "--port", str(port), "--port_file", port_file, "--metrics_port", "-1",
            "--checkpoint_dir", os.path.join(self.work, f"checkpoints-group-{i}")])
        self.group_ports[i] = wait_for_port_file(port_file, process, f"group {i}")

    def start_coordinator(self, port=0):
        port_file = os.path.join(self.work, "coordinator.port")
        metrics_file = os.path.join(self.work, "coordinator.metrics")
        for path in (port_file, metrics_file):
            if os.path.exists(path):
                os.unlink(path)
        process = self.start("coordinator", [
            os.path.join(self.build_dir, "services/coordinator/synthgrad_coordinator"),
            "--port", str(port), "--port_file", port_file,
            "--metrics_port", "0", "--metrics_port_file", metrics_file,
            "--checkpoint_dir", os.path.join(self.work, "checkpoints-coordinator")])
        self.coordinator_port = wait_for_port_file(port_file, process, "coordinator")
        self.metrics_port = wait_for_port_file(metrics_file, process, "coordinator metrics")

    def ctl(self, *args):
        return [os.path.join(self.build_dir, "services/ctl/synthgradctl"), *args,
                f"--coordinator=127.0.0.1:{self.coordinator_port}"]

    def train(self, spec_path, summary_path, *extra):
        log = open(os.path.join(self.work, "train.log"), "a")
        return subprocess.Popen(
            self.ctl("train", f"--spec={spec_path}", f"--summary_out={summary_path}", *extra),
            stdout=log, stderr=subprocess.STDOUT)

    def status(self):
        result = subprocess.run(self.ctl("status"), capture_output=True, text=True,
                                timeout=30)
        return result.stdout

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as response:
            return response.read().decode()

    def close(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            process.wait()


def write_spec(cluster, source_dir, path):
    text = open(os.path.join(source_dir, "configs/fashion_mnist_smoke.textproto")).read()
    text = re.sub(r"epochs: \d+", f"epochs: {EPOCHS}", text)
    text = re.sub(r"train_limit: \d+", "train_limit: 0", text)
    for i in range(GROUPS):
        text = text.replace(f'"127.0.0.1:{50051 + i}"',
                            f'"127.0.0.1:{cluster.group_ports[i]}"')
    text = re.sub(r"(?m)^checkpoint_interval_shards: \d+\n", "", text)
    text += (f"\nshard_batches: {SHARD_BATCHES}\n"
             f"checkpoint_interval_shards: {CHECKPOINT_INTERVAL_SHARDS}\n"
             "batch_timeout_seconds: 60\nrecovery_timeout_seconds: 60\n")
    open(path, "w").write(text)


def wait_for_status(cluster, predicate, what, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = cluster.status()
        if predicate(text):
            return text
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}; last status:\n{text}")


def checkpoint_id(status_text):
    match = re.search(r"^checkpoint (\d+),", status_text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def wait_for_job(train, cluster):
    try:
        return train.wait(timeout=JOB_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the job did not finish within {JOB_TIMEOUT_SECONDS} s; "
                           f"status:\n{cluster.status()}")


def check_exactly_once(summary, label):
    refed = int(summary.get("batchesRefed", 0))
    fed = int(summary.get("batchesFed", 0))
    check(summary["state"] == "JOB_STATE_SUCCEEDED", f"{label}: job succeeded")
    check(int(summary["samplesDone"]) == EPOCHS * TRAIN_EXAMPLES,
          f"{label}: samples_done {summary['samplesDone']} == {EPOCHS * TRAIN_EXAMPLES}")
    check(int(summary.get("shardsCompleted", 0)) == EPOCHS * SHARDS_PER_EPOCH,
          f"{label}: shards_completed {summary.get('shardsCompleted')} == "
          f"{EPOCHS * SHARDS_PER_EPOCH}")
    epochs = summary.get("epochsDone", [])
    check(len(epochs) == EPOCHS, f"{label}: {len(epochs)} epoch results")
    for epoch in epochs:
        check(int(epoch.get("trainExamples", 0)) == TRAIN_EXAMPLES,
              f"{label}: epoch {epoch['epoch']} counted {epoch.get('trainExamples')} "
              f"training examples")
    return fed, refed


def scenario_group_crash(build_dir, source_dir, work):
    print("== scenario: SIGKILL of group 1", flush=True)
    cluster = Cluster(build_dir, work)
    try:
        for i in range(GROUPS):
            cluster.start_group(i)
        cluster.start_coordinator()
        spec_path = os.path.join(work, "spec.textproto")
        summary_path = os.path.join(work, "summary.json")
        write_spec(cluster, source_dir, spec_path)
        first = cluster.train(spec_path, os.path.join(work, "first.json"))
        code = wait_for_job(first, cluster)
        check(code == 0, f"first job with the same spec exited {code}")

        train = cluster.train(spec_path, summary_path)
        wait_for_status(
            cluster, lambda text: checkpoint_id(text) >= 2 and "fashion-mnist-smoke-2" in text,
            "the second checkpoint of the second job")
        time.sleep(0.3)  # Let a few batches go out after the checkpoint.
        cluster.processes["group-1"].send_signal(signal.SIGKILL)
        cluster.processes["group-1"].wait()
        print("killed group 1", flush=True)
        time.sleep(1.0)
        cluster.start_group(1, port=cluster.group_ports[1])
        print("restarted group 1", flush=True)

        code = wait_for_job(train, cluster)
        check(code == 0, f"synthgradctl train exited {code}")
        summary = json.load(open(summary_path))
        fed, refed = check_exactly_once(summary, "group crash")
        check(int(summary.get("recoveries", 0)) == 1,
              f"recoveries {summary.get('recoveries')} == 1")
        # The roll-back covers the batches after the last checkpoint: at
        # least one, at most one checkpoint interval plus those in flight.
        max_refed = CHECKPOINT_INTERVAL_SHARDS * SHARD_BATCHES + MAX_IN_FLIGHT
        check(1 <= refed <= max_refed, f"batches fed again {refed} in [1, {max_refed}]")
        check(fed == EPOCHS * BATCHES_PER_EPOCH + refed,
              f"batches fed {fed} == {EPOCHS * BATCHES_PER_EPOCH} + {refed}")
        accuracy = summary["epochsDone"][-1]["testAccuracy"]
        check(accuracy > 0.75, f"final test accuracy {accuracy:.4f} > 0.75")

        metrics = cluster.metrics()
        check(metric_value(metrics, "synthgrad_coordinator_recoveries_total") == 1,
              "metric recoveries_total is 1")
        check(metric_value(metrics, "synthgrad_coordinator_training_batches_refed_total")
              == refed, "metric training_batches_refed_total equals batches_refed")
        # The counters also cover the first job, which fed every batch once.
        check(metric_value(metrics, "synthgrad_coordinator_training_batches_fed_total")
              == fed + EPOCHS * BATCHES_PER_EPOCH,
              "metric training_batches_fed_total equals the batches_fed of both jobs")
        checkpoints = metric_value(metrics, "synthgrad_coordinator_checkpoints_total")
        check(checkpoints is not None and checkpoints >= 2,
              f"metric checkpoints_total {checkpoints} >= 2")

        # Every checkpoint file lies in its process's folder, each job run
        # has a folder of its own, and pruning keeps at most three per run.
        for i in range(GROUPS):
            root = os.path.join(work, f"checkpoints-group-{i}")
            runs = {}
            for folder, _, names in os.walk(root):
                if names:
                    runs[folder] = names
            check(len(runs) == 2, f"group {i} has {len(runs)} run folders, one per job")
            for folder, names in runs.items():
                check(1 <= len(names) <= 3,
                      f"group {i} keeps {len(names)} files in {os.path.relpath(folder, root)}")
                check(all(name.endswith(".ckpt") for name in names),
                      f"group {i} leaves no temporary files")
    finally:
        cluster.close()


def scenario_coordinator_restart(build_dir, source_dir, work):
    print("== scenario: SIGTERM of the coordinator, then resume", flush=True)
    cluster = Cluster(build_dir, work)
    try:
        for i in range(GROUPS):
            cluster.start_group(i)
        cluster.start_coordinator()
        spec_path = os.path.join(work, "spec.textproto")
        summary_path = os.path.join(work, "summary.json")
        write_spec(cluster, source_dir, spec_path)
        train = cluster.train(spec_path, summary_path)

        status = wait_for_status(
            cluster, lambda text: checkpoint_id(text) >= 1 and "TRAINING" in text,
            "training after the first checkpoint")
        before = checkpoint_id(status)
        coordinator = cluster.processes["coordinator"]
        started = time.time()
        coordinator.send_signal(signal.SIGTERM)
        code = coordinator.wait(timeout=30)
        seconds = time.time() - started
        check(code == 0, f"coordinator exited {code} after SIGTERM")
        check(seconds < 10, f"coordinator stopped in {seconds:.1f} s")
        train.wait(timeout=30)
        log = open(os.path.join(work, "coordinator.log")).read()
        check("wrote a final checkpoint" in log, "coordinator wrote a final checkpoint")

        cluster.start_coordinator(port=cluster.coordinator_port)
        resumed = cluster.train(spec_path, summary_path, "--resume")
        code = wait_for_job(resumed, cluster)
        check(code == 0, f"resumed synthgradctl train exited {code}")
        summary = json.load(open(summary_path))
        check_exactly_once(summary, "coordinator restart")
        check(int(summary.get("checkpointId", 0)) > before,
              f"checkpoint id {summary.get('checkpointId')} passed {before}")
        log = open(os.path.join(work, "coordinator.log")).read()
        check("resumes from checkpoint" in log, "the new coordinator resumed")

        again = subprocess.run(cluster.ctl("train", f"--spec={spec_path}", "--resume"),
                               capture_output=True, text=True, timeout=60)
        check(again.returncode != 0 and "already finished" in again.stderr,
              f"a resume of the finished job is rejected: {again.stderr.strip()}")
    finally:
        cluster.close()


def main():
    build_dir, source_dir = sys.argv[1], sys.argv[2]
    work = tempfile.mkdtemp(prefix="synthgrad-crash-")
    try:
        for scenario in (scenario_group_crash, scenario_coordinator_restart):
            folder = os.path.join(work, scenario.__name__)
            os.makedirs(folder)
            scenario(build_dir, source_dir, folder)
    except Exception as error:  # Report any failure with the logs' place.
        failures.append(f"{type(error).__name__}: {error}")
        print(f"FAILED: {error}", flush=True)
    if failures:
        print(f"{len(failures)} checks failed; logs are in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print("PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
