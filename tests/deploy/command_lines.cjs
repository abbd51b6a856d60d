#!/usr/bin/env node
// Runs the container command lines of deploy/docker-compose.yml and of each
// rendered Kubernetes overlay outside a container, with the binaries of a
// build folder. For each deployment it starts the coordinator and every group
// with their exact flags and checks gRPC health (grpc.health.v1.Health/Check,
// as the Kubernetes probes do) and /metrics. Then it trains briefly with the
// job's own synthgradctl command and stops the servers with SIGTERM, as a
// container runtime does.
//
// Flags appended after the deployment's own override these, because the last
// occurrence of a flag wins: loopback bind addresses, ports picked by the
// kernel, the loopback targets of the other processes, and a short job
// (--epochs=1 --train_limit=1024 --test_limit=512). A --checkpoint_dir
// becomes a folder of the test's own, in place of the mounted volume.
//
// An overlay that mounts Secrets gets the Secret of
// deploy/k8s/make-tls-secret.sh for its namespace, written to a folder as the
// kubelet does, and the flags that name files under the mount read from that
// folder. When the servers use TLS, the health checks use TLS with the
// server's own certificate, and a plaintext health check must fail.
//
// Usage: NODE_PATH=DIR/node_modules command_lines.cjs BUILD_DIR SOURCE_DIR RENDERED_DIR
"use strict";

const childProcess = require("child_process");
const fs = require("fs");
const http = require("http");
const os = require("os");
const path = require("path");

const { loadModule } = require("./node_modules.cjs");
const YAML = loadModule("yaml");
const grpc = loadModule("@grpc/grpc-js");
const protoLoader = loadModule("@grpc/proto-loader");

const IMAGE_CONFIGS_DIR = "/usr/share/synthgrad/configs";
const START_TIMEOUT_MS = 10000;
const TRAIN_TIMEOUT_MS = 120000;
const STOP_TIMEOUT_MS = 5000;
const SHORT_JOB_FLAGS = ["--epochs=1", "--train_limit=1024", "--test_limit=512"];

// The standard grpc.health.v1 service, reduced to the Check method.
const HEALTH_PROTO = `
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
`;

// A binary of the image and its path in the build folder.
function binaryPath(buildDir, name) {
  const relative = {
    synthgrad_layer: "services/layer/synthgrad_layer",
    synthgrad_coordinator: "services/coordinator/synthgrad_coordinator",
    synthgradctl: "services/ctl/synthgradctl",
  }[name];
  if (relative === undefined) {
    throw new Error(`command names ${name}, which is not a binary of the image`);
  }
  const binary = path.join(buildDir, relative);
  if (!fs.existsSync(binary)) {
    throw new Error(`${binary} not found; build the project in ${buildDir} first`);
  }
  return binary;
}

// Expands $(NAME) in container arguments as the kubelet does, from the
// container's env entries (value or metadata.namespace).
function expandKubernetesVariables(args, env, namespace) {
  const values = {};
  for (const entry of env ?? []) {
    values[entry.name] = entry.valueFrom?.fieldRef?.fieldPath === "metadata.namespace" ? namespace : entry.value;
  }
  return args.map((arg) => arg.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g,
    (match, name) => (values[name] !== undefined ? values[name] : match)));
}

// Returns {name, coordinator, groups, train, mapSpec} for the compose file.
// Commands are argument arrays as in the file, and mapSpec maps a --spec path
// in the image to the same file in the source tree.
function composeDeployment(sourceDir) {
  const compose = YAML.parse(fs.readFileSync(path.join(sourceDir, "deploy/docker-compose.yml"), "utf8"), { merge: true });
  const groups = Object.keys(compose.services).filter((name) => /^group-\d+$/.test(name)).sort();
  return {
    name: "compose",
    coordinator: compose.services.coordinator.command,
    groups: groups.map((name) => compose.services[name].command),
    train: compose.services.train.command,
    // The image contains configs/ at IMAGE_CONFIGS_DIR.
    mapSpec: (specPath) => path.join(sourceDir, "configs", path.relative(IMAGE_CONFIGS_DIR, specPath)),
  };
}

// Runs deploy/k8s/make-tls-secret.sh for `namespace` and returns the Secret
// it writes.
function makeTlsSecret(sourceDir, namespace, outDir) {
  const script = path.join(sourceDir, "deploy/k8s/make-tls-secret.sh");
  const result = childProcess.spawnSync(script, ["--namespace", namespace, "--days", "2", outDir], {
    encoding: "utf8",
    timeout: 60000,
  });
  if (result.status !== 0) {
    throw new Error(`${script} failed (exit ${result.status ?? result.signal}): ${result.stderr}`);
  }
  const secretFile = fs.readdirSync(outDir).find((name) => name.endsWith("-secret.yaml"));
  return YAML.parse(fs.readFileSync(path.join(outDir, secretFile), "utf8"));
}

// Writes the Secret volumes of a pod template to folders, one file per key as
// the kubelet does, and returns a function that maps a file path under a
// mount onto its folder.
function secretPathMapper(object, secret, workDir) {
  const podSpec = object.spec.template.spec;
  const mounts = [];
  for (const mount of podSpec.containers[0].volumeMounts ?? []) {
    const volume = (podSpec.volumes ?? []).find((entry) => entry.name === mount.name);
    if (volume?.secret === undefined) {
      continue;
    }
    if (volume.secret.secretName !== secret.metadata.name) {
      throw new Error(`${object.kind}/${object.metadata.name} mounts Secret ${volume.secret.secretName}, but make-tls-secret.sh writes ${secret.metadata.name}`);
    }
    const folder = fs.mkdtempSync(path.join(workDir, `secret-${mount.name}-`));
    for (const [key, value] of Object.entries(secret.data)) {
      fs.writeFileSync(path.join(folder, key), Buffer.from(value, "base64"), { mode: 0o600 });
    }
    mounts.push({ mountPath: mount.mountPath, folder });
  }
  return (arg) => {
    const match = /^(--[a-z_]+=)(.*)$/.exec(arg);
    const mount = match && mounts.find((entry) => match[2].startsWith(`${entry.mountPath}/`));
    return mount ? `${match[1]}${path.join(mount.folder, path.relative(mount.mountPath, match[2]))}` : arg;
  };
}

function kubernetesDeployment(file, workDir, sourceDir) {
  const objects = YAML.parseAllDocuments(fs.readFileSync(file, "utf8")).map((doc) => doc.toJS()).filter(Boolean);
  const namespace = objects.find((object) => object.kind === "Namespace").metadata.name;
  const container = (object) => object.spec.template.spec.containers[0];
  const mountsSecret = (object) => (object.spec.template.spec.volumes ?? []).some((volume) => volume.secret !== undefined);
  let secret;
  const command = (object) => {
    const args = expandKubernetesVariables(container(object).command, container(object).env, namespace);
    if (!mountsSecret(object)) {
      return args;
    }
    secret ??= makeTlsSecret(sourceDir, namespace, path.join(workDir, `${path.basename(file, ".yaml")}-tls`));
    return args.map(secretPathMapper(object, secret, workDir));
  };
  const statefulSet = objects.find((object) => object.kind === "StatefulSet");
  const deployment = objects.find((object) => object.kind === "Deployment" && object.metadata.name === "coordinator");
  const job = objects.find((object) => object.kind === "Job");

  // Writes each ConfigMap mounted by the Job to a folder, as the kubelet
  // does, and maps the mount path onto it.
  const mounts = [];
  for (const mount of container(job).volumeMounts ?? []) {
    const volume = job.spec.template.spec.volumes.find((entry) => entry.name === mount.name);
    const configMap = objects.find((object) => object.kind === "ConfigMap" && object.metadata.name === volume.configMap?.name);
    if (configMap === undefined) {
      continue;
    }
    const folder = path.join(workDir, `${path.basename(file, ".yaml")}-${mount.name}`);
    fs.mkdirSync(folder, { recursive: true });
    for (const [key, value] of Object.entries(configMap.data ?? {})) {
      fs.writeFileSync(path.join(folder, key), value);
    }
    mounts.push({ mountPath: mount.mountPath, folder });
  }
  return {
    name: path.basename(file, ".yaml"),
    coordinator: command(deployment),
    groups: Array.from({ length: statefulSet.spec.replicas }, () => command(statefulSet)),
    train: command(job),
    mapSpec: (specPath) => {
      const mount = mounts.find((entry) => specPath.startsWith(`${entry.mountPath}/`));
      if (mount === undefined) {
        throw new Error(`--spec ${specPath} is not on a mounted ConfigMap`);
      }
      return path.join(mount.folder, path.relative(mount.mountPath, specPath));
    },
  };
}

function sleep(milliseconds) {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}

// A server started from a container command. waitForPorts() sets `port` and
// `metricsPort` once the server has written both port files.
class Server {
  constructor(buildDir, workDir, name, command) {
    this.name = name;
    this.portFile = path.join(workDir, `${name}.port`);
    this.metricsPortFile = path.join(workDir, `${name}.metrics_port`);
    this.logFile = path.join(workDir, `${name}.log`);
    this.args = [
      ...command.slice(1),
      "--bind_address=127.0.0.1",
      "--port=0",
      `--port_file=${this.portFile}`,
      "--metrics_bind_address=127.0.0.1",
      "--metrics_port=0",
      `--metrics_port_file=${this.metricsPortFile}`,
    ];
    if (command[0] === "synthgrad_coordinator") {
      // Empty means BIND_ADDRESS:PORT, the loopback port picked above.
      this.args.push("--advertise_address=");
    }
    if (command.some((arg) => arg.startsWith("--checkpoint_dir="))) {
      // Stands in for the volume mounted at the container's folder.
      this.args.push(`--checkpoint_dir=${path.join(workDir, `${name}.checkpoints`)}`);
    }
    const log = fs.openSync(this.logFile, "w");
    this.process = childProcess.spawn(binaryPath(buildDir, command[0]), this.args, { stdio: ["ignore", log, log] });
    fs.closeSync(log);
    this.exit = new Promise((resolve) => this.process.on("exit", (code, signal) => resolve({ code, signal })));
    this.exited = false;
    this.exit.then(() => { this.exited = true; });
  }

  async waitForPorts() {
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (this.exited) {
        throw new Error(`${this.name} exited at start-up; log:\n${this.logTail()}`);
      }
      const port = readPort(this.portFile);
      const metricsPort = readPort(this.metricsPortFile);
      if (port > 0 && metricsPort > 0) {
        this.port = port;
        this.metricsPort = metricsPort;
        return;
      }
      await sleep(50);
    }
    throw new Error(`${this.name} wrote no port files within ${START_TIMEOUT_MS} ms; log:\n${this.logTail()}`);
  }

  // Sends SIGTERM and returns the exit code, or throws when the server does
  // not stop in time.
  async stop() {
    if (this.exited) {
      throw new Error(`${this.name} had already exited; log:\n${this.logTail()}`);
    }
    this.process.kill("SIGTERM");
    const result = await Promise.race([this.exit, sleep(STOP_TIMEOUT_MS).then(() => null)]);
    if (result === null) {
      this.process.kill("SIGKILL");
      throw new Error(`${this.name} did not stop within ${STOP_TIMEOUT_MS} ms of SIGTERM`);
    }
    return result;
  }

  logTail() {
    return fs.readFileSync(this.logFile, "utf8").split("\n").slice(-20).join("\n");
  }
}

function readPort(file) {
  try {
    return Number(fs.readFileSync(file, "utf8").trim());
  } catch (error) {
    return 0;
  }
}

// Returns the value of --name=VALUE in an argument list, or undefined.
function flagValue(args, name) {
  const prefix = `--${name}=`;
  const matches = args.filter((arg) => arg.startsWith(prefix));
  return matches.length > 0 ? matches[matches.length - 1].slice(prefix.length) : undefined;
}

const PLAINTEXT = { credentials: grpc.credentials.createInsecure(), options: {} };

// Returns the credentials and channel options of a client that uses a
// server's own --tls_* flags, or PLAINTEXT when the server has no
// --tls_ca_file. Node.js deprecates TLS server names that are IP addresses,
// so TLS clients verify the name localhost, which make-tls-secret.sh puts in
// the certificate.
function clientSettingsFor(args) {
  const caFile = flagValue(args, "tls_ca_file");
  if (!caFile) {
    return PLAINTEXT;
  }
  const credentials = grpc.credentials.createSsl(fs.readFileSync(caFile),
    fs.readFileSync(flagValue(args, "tls_key_file")), fs.readFileSync(flagValue(args, "tls_cert_file")));
  return { credentials, options: { "grpc.ssl_target_name_override": "localhost" } };
}

function healthClient(target, { credentials, options }) {
  const protoFile = path.join(os.tmpdir(), `synthgrad-health-${process.pid}.proto`);
  fs.writeFileSync(protoFile, HEALTH_PROTO);
  const definition = grpc.loadPackageDefinition(protoLoader.loadSync(protoFile, { enums: String }));
  fs.rmSync(protoFile);
  return new definition.grpc.health.v1.Health(target, credentials, options);
}

// Calls grpc.health.v1.Health/Check with the empty service name, as a
// Kubernetes gRPC probe without `service` does, and returns the status.
function checkHealth(port, clientSettings = PLAINTEXT) {
  const client = healthClient(`127.0.0.1:${port}`, clientSettings);
  return new Promise((resolve, reject) => {
    client.Check({ service: "" }, { deadline: Date.now() + 5000 }, (error, response) => {
      client.close();
      if (error) {
        reject(new Error(`Health/Check on 127.0.0.1:${port} failed: ${error.message}`));
      } else {
        resolve(response.status);
      }
    });
  });
}

function fetchMetrics(port) {
  return new Promise((resolve, reject) => {
    const request = http.get({ host: "127.0.0.1", port, path: "/metrics", timeout: 5000 }, (response) => {
      let body = "";
      response.on("data", (chunk) => { body += chunk; });
      response.on("end", () => resolve({ status: response.statusCode, body }));
    });
    request.on("timeout", () => request.destroy(new Error(`GET /metrics on port ${port} timed out`)));
    request.on("error", reject);
  });
}

// Runs the Job's synthgradctl command against the loopback servers.
function runTrain(buildDir, deployment, coordinator, groups) {
  const command = deployment.train;
  const args = command.slice(1).map((arg) =>
    arg.startsWith("--spec=") ? `--spec=${deployment.mapSpec(arg.slice("--spec=".length))}` : arg);
  args.push(`--coordinator=127.0.0.1:${coordinator.port}`,
    `--group_addresses=${groups.map((group) => `127.0.0.1:${group.port}`).join(",")}`,
    ...SHORT_JOB_FLAGS);
  const result = childProcess.spawnSync(binaryPath(buildDir, command[0]), args, {
    encoding: "utf8",
    timeout: TRAIN_TIMEOUT_MS,
  });
  if (result.status !== 0 || !/succeeded/.test(result.stdout)) {
    throw new Error(`${command.slice(0, 2).join(" ")} exited with ${result.status ?? result.signal}:\n${result.stdout}\n${result.stderr}`);
  }
  return result.stdout.trim().split("\n").pop();
}

async function checkDeployment(buildDir, deployment, workDir) {
  const runDir = fs.mkdtempSync(path.join(workDir, `${deployment.name}-`));
  const servers = [new Server(buildDir, runDir, "coordinator", deployment.coordinator)];
  deployment.groups.forEach((command, index) => servers.push(new Server(buildDir, runDir, `group-${index}`, command)));
  try {
    for (const server of servers) {
      await server.waitForPorts();
      const status = await checkHealth(server.port, clientSettingsFor(server.args));
      if (status !== "SERVING") {
        throw new Error(`${server.name}: health status ${status}; expected SERVING`);
      }
      if (flagValue(server.args, "tls_ca_file")) {
        const plaintext = await checkHealth(server.port).then((result) => result, (error) => error);
        if (!(plaintext instanceof Error)) {
          throw new Error(`${server.name} uses TLS but answered a plaintext Health/Check with ${plaintext}`);
        }
      }
      const metrics = await fetchMetrics(server.metricsPort);
      if (metrics.status !== 200 || !/^synthgrad_/m.test(metrics.body)) {
        throw new Error(`${server.name}: GET /metrics returned ${metrics.status} without synthgrad_ metrics`);
      }
    }
    const tls = flagValue(servers[0].args, "tls_ca_file") ? " over TLS, plaintext rejected" : "";
    console.log(`ok ${deployment.name}: coordinator and ${deployment.groups.length} groups SERVING${tls}, /metrics up`);
    const summary = runTrain(buildDir, deployment, servers[0], servers.slice(1));
    console.log(`ok ${deployment.name}: ${deployment.train.slice(0, 2).join(" ")}: ${summary}`);
  } finally {
    // SIGTERM to all at once, as `docker-compose down` and a namespace
    // deletion do.
    const results = await Promise.all(servers.map(async (server) => {
      if (server.exited) {
        return `${server.name} exited before SIGTERM; log:\n${server.logTail()}`;
      }
      try {
        const { code, signal } = await server.stop();
        return code === 0 ? null : `${server.name} exited with ${code ?? signal} after SIGTERM; log:\n${server.logTail()}`;
      } catch (error) {
        return error.message;
      }
    }));
    const failures = results.filter((result) => result !== null);
    if (failures.length > 0) {
      throw new Error(failures.join("\n"));
    }
  }
  console.log(`ok ${deployment.name}: every server exited 0 on SIGTERM`);
}

async function main() {
  if (process.argv.length !== 5) {
    console.error("usage: command_lines.cjs BUILD_DIR SOURCE_DIR RENDERED_DIR");
    process.exit(2);
  }
  const [buildDir, sourceDir, renderedDir] = process.argv.slice(2);
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), "synthgrad-command-lines-"));
  const deployments = [composeDeployment(sourceDir)];
  for (const name of fs.readdirSync(renderedDir).filter((entry) => entry.endsWith(".yaml")).sort()) {
    deployments.push(kubernetesDeployment(path.join(renderedDir, name), workDir, sourceDir));
  }

  let failures = 0;
  for (const deployment of deployments) {
    try {
      await checkDeployment(buildDir, deployment, workDir);
    } catch (error) {
      failures += 1;
      console.error(`FAILED ${deployment.name}: ${error.message}`);
    }
  }
  fs.rmSync(workDir, { recursive: true, force: true });
  if (failures > 0) {
    console.error(`${failures} of ${deployments.length} deployments failed`);
    process.exit(1);
  }
  console.log("PASSED");
}

main();
