#!/usr/bin/env node
// Checks that the deployment files agree with each other and with the job
// spec: the group count of configs/fashion_mnist_dni.textproto (as parsed by
// `synthgradctl validate`), the group services, commands and ports of
// deploy/docker-compose.yml and its Prometheus configuration, and for each
// rendered Kubernetes overlay the spec ConfigMap, the StatefulSet replicas,
// ports and probes, the headless Service, the coordinator, the Job, the
// per-group NetworkPolicies and the TLS Secret wiring. The production overlay
// must use mutual TLS with the Secret that deploy/k8s/make-tls-secret.sh
// writes, and the certificate of that Secret must name every gRPC target.
//
// Usage: NODE_PATH=DIR/node_modules cross_check.cjs BUILD_DIR SOURCE_DIR RENDERED_DIR
"use strict";

const childProcess = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");

const { loadModule } = require("./node_modules.cjs");
const { validateDocument } = require("./validate_manifests.cjs");
const YAML = loadModule("yaml");

const IMAGE_CONFIGS_DIR = "/usr/share/synthgrad/configs";
const DEFAULT_SPEC = "configs/fashion_mnist_dni.textproto";
// Overlays that must use mutual TLS.
const TLS_OVERLAYS = ["production"];
// The Secret key that each file flag must read.
const TLS_FILE_KEYS = { tls_cert_file: "tls.crt", tls_key_file: "tls.key", tls_ca_file: "ca.crt" };

const errors = [];
function expect(condition, message) {
  if (!condition) {
    errors.push(message);
  }
  return condition;
}

// Returns the value of --name=VALUE in an argument list, or undefined.
function flagValue(args, name) {
  const prefix = `--${name}=`;
  const matches = args.filter((arg) => arg.startsWith(prefix));
  return matches.length > 0 ? matches[matches.length - 1].slice(prefix.length) : undefined;
}

// Runs `synthgradctl validate` and returns its group count; `extraArgs` are
// train flags such as --group_addresses.
function validatedGroupCount(ctl, specPath, extraArgs, where) {
  const result = childProcess.spawnSync(ctl, ["validate", `--spec=${specPath}`, ...extraArgs], {
    encoding: "utf8",
    timeout: 30000,
  });
  const match = /^groups: (\d+)$/m.exec(result.stdout ?? "");
  if (!expect(result.status === 0 && match, `${where}: synthgradctl validate failed (exit ${result.status}): ${result.stderr}`)) {
    return -1;
  }
  return Number(match[1]);
}

// Returns the spec without comments, blank lines and group address values,
// so that two copies compare equal when only addresses differ.
function specSkeleton(text) {
  return text
    .split("\n")
    .map((line) => line.replace(/#.*$/, "").trimEnd())
    .filter((line) => line.trim() !== "")
    .map((line) => line.replace(/address: "[^"]*"/, 'address: "<address>"'))
    .join("\n");
}

function specAddresses(text) {
  return [...text.matchAll(/^\s*address:\s*"([^"]*)"/gm)].map((match) => match[1]);
}

function checkCompose(ctl, sourceDir, groupCount) {
  const where = "deploy/docker-compose.yml";
  const errorsBefore = errors.length;
  const compose = YAML.parse(fs.readFileSync(path.join(sourceDir, where), "utf8"), { merge: true });
  const services = compose.services ?? {};

  const groupNames = Object.keys(services).filter((name) => /^group-\d+$/.test(name)).sort();
  const expectedNames = Array.from({ length: groupCount }, (_, index) => `group-${index}`);
  expect(JSON.stringify(groupNames) === JSON.stringify(expectedNames),
    `${where}: group services are ${groupNames.join(", ")}; expected ${expectedNames.join(", ")}`);

  const coordinatorArgs = services.coordinator?.command ?? [];
  const coordinatorPort = flagValue(coordinatorArgs, "port");
  expect(coordinatorArgs[0] === "synthgrad_coordinator", `${where}: coordinator does not run synthgrad_coordinator`);
  expect(flagValue(coordinatorArgs, "advertise_address") === `coordinator:${coordinatorPort}`,
    `${where}: coordinator --advertise_address is not coordinator:${coordinatorPort}`);

  const groupPorts = [];
  const metricsPorts = [];
  for (const name of groupNames) {
    const args = services[name].command ?? [];
    expect(args[0] === "synthgrad_layer", `${where}: ${name} does not run synthgrad_layer`);
    groupPorts.push(flagValue(args, "port"));
    metricsPorts.push(flagValue(args, "metrics_port"));
  }
  for (const name of ["coordinator", ...groupNames]) {
    const args = services[name].command ?? [];
    expect(flagValue(args, "bind_address") === "0.0.0.0", `${where}: ${name} does not bind 0.0.0.0`);
    expect(flagValue(args, "metrics_bind_address") === "0.0.0.0", `${where}: ${name} metrics do not bind 0.0.0.0`);
  }

  const trainArgs = services.train?.command ?? [];
  expect(trainArgs[0] === "synthgradctl" && trainArgs[1] === "train", `${where}: train does not run synthgradctl train`);
  expect(flagValue(trainArgs, "coordinator") === `coordinator:${coordinatorPort}`,
    `${where}: train --coordinator is not coordinator:${coordinatorPort}`);
  const addresses = (flagValue(trainArgs, "group_addresses") ?? "").split(",");
  const expectedAddresses = groupNames.map((name, index) => `${name}:${groupPorts[index]}`);
  expect(JSON.stringify(addresses) === JSON.stringify(expectedAddresses),
    `${where}: train --group_addresses is ${addresses.join(",")}; expected ${expectedAddresses.join(",")}`);

  // The image contains configs/ at IMAGE_CONFIGS_DIR; validate the same file.
  const specInImage = flagValue(trainArgs, "spec") ?? "";
  if (expect(specInImage.startsWith(`${IMAGE_CONFIGS_DIR}/`), `${where}: train --spec ${specInImage} is not under ${IMAGE_CONFIGS_DIR}`)) {
    const specPath = path.join(sourceDir, "configs", specInImage.slice(IMAGE_CONFIGS_DIR.length + 1));
    const count = validatedGroupCount(ctl, specPath, trainArgs.slice(2).filter((arg) => !arg.startsWith("--spec=")), where);
    expect(count === groupCount, `${where}: train spec has ${count} groups; expected ${groupCount}`);
  }

  // Prometheus must scrape every service on the metrics port of its command.
  const prometheusWhere = "deploy/docker/prometheus.yml";
  const prometheus = YAML.parse(fs.readFileSync(path.join(sourceDir, prometheusWhere), "utf8"));
  const jobs = Object.fromEntries((prometheus.scrape_configs ?? []).map((job) => [job.job_name, job]));
  const coordinatorTargets = (jobs["synthgrad-coordinator"]?.static_configs ?? []).flatMap((config) => config.targets);
  expect(JSON.stringify(coordinatorTargets) === JSON.stringify([`coordinator:${flagValue(coordinatorArgs, "metrics_port")}`]),
    `${prometheusWhere}: coordinator targets ${coordinatorTargets.join(",")} do not match the compose metrics port`);
  const groupTargets = (jobs["synthgrad-group"]?.static_configs ?? []).map((config) => ({
    targets: config.targets,
    group: config.labels?.group,
  }));
  const expectedTargets = groupNames.map((name, index) => ({ targets: [`${name}:${metricsPorts[index]}`], group: String(index) }));
  expect(JSON.stringify(groupTargets) === JSON.stringify(expectedTargets),
    `${prometheusWhere}: group targets ${JSON.stringify(groupTargets)}; expected ${JSON.stringify(expectedTargets)}`);
  if (errors.length > errorsBefore) {
    return;
  }
  console.log(`ok compose: ${groupNames.length} groups on port ${groupPorts[0]}, coordinator on ${coordinatorPort}`);
}

function containerPort(container, name) {
  return (container.ports ?? []).find((port) => port.name === name)?.containerPort;
}

// Checks a server container: flags, named ports, probes and the Prometheus
// annotations agree; returns its gRPC port. The kubelet's gRPC probes cannot
// use TLS, so a server with --tls_ca_file must have TCP probes on its port.
function checkServerContainer(template, container, where) {
  const args = container.command ?? [];
  const port = Number(flagValue(args, "port"));
  const metricsPort = Number(flagValue(args, "metrics_port"));
  expect(flagValue(args, "bind_address") === "0.0.0.0", `${where}: --bind_address is not 0.0.0.0`);
  expect(flagValue(args, "metrics_bind_address") === "0.0.0.0", `${where}: --metrics_bind_address is not 0.0.0.0`);
  expect(containerPort(container, "grpc") === port, `${where}: containerPort grpc differs from --port=${port}`);
  expect(containerPort(container, "metrics") === metricsPort, `${where}: containerPort metrics differs from --metrics_port=${metricsPort}`);
  const tls = flagValue(args, "tls_ca_file") !== undefined;
  for (const probe of ["readinessProbe", "livenessProbe"]) {
    if (tls) {
      expect(container[probe]?.grpc === undefined, `${where}: ${probe} is a gRPC probe, which cannot use TLS; use tcpSocket`);
      expect(container[probe]?.tcpSocket?.port === port, `${where}: ${probe}.tcpSocket.port is not ${port}`);
    } else {
      expect(container[probe]?.grpc?.port === port, `${where}: ${probe}.grpc.port is not the number ${port}`);
    }
  }
  const annotations = template.metadata?.annotations ?? {};
  expect(annotations["prometheus.io/scrape"] === "true", `${where}: no prometheus.io/scrape annotation`);
  expect(annotations["prometheus.io/port"] === String(metricsPort), `${where}: prometheus.io/port is not ${metricsPort}`);
  return { port, metricsPort };
}

function checkServicePorts(service, port, metricsPort, where) {
  const ports = Object.fromEntries((service?.spec?.ports ?? []).map((entry) => [entry.name, entry]));
  expect(ports.grpc?.port === port && ports.grpc?.targetPort === port, `${where}: Service port grpc is not ${port}`);
  expect(ports.metrics?.port === metricsPort && ports.metrics?.targetPort === metricsPort,
    `${where}: Service port metrics is not ${metricsPort}`);
}

// Checks the --tls_* flags of one workload against its pod template: each
// file flag names the matching key of a Secret mounted read-only, only the
// synthgrad user's group may read the files, and servers require client
// certificates. Returns the Secret's name, or undefined when the workload has
// no --tls_* flag.
function checkWorkloadTls(object, isServer, where) {
  const podSpec = object.spec.template.spec;
  const container = podSpec.containers[0];
  const args = container.command ?? [];
  if (!args.some((arg) => arg.startsWith("--tls_"))) {
    return undefined;
  }
  const secretNames = new Set();
  for (const [flag, key] of Object.entries(TLS_FILE_KEYS)) {
    const file = flagValue(args, flag);
    if (!expect(file, `${where}: --${flag} is missing`)) {
      continue;
    }
    const mount = (container.volumeMounts ?? []).find((entry) => file.startsWith(`${entry.mountPath}/`));
    if (!expect(mount, `${where}: --${flag}=${file} is not on a mounted volume`)) {
      continue;
    }
    expect(mount.readOnly === true, `${where}: volume mount ${mount.name} is not readOnly`);
    const secret = (podSpec.volumes ?? []).find((volume) => volume.name === mount.name)?.secret;
    if (!expect(secret, `${where}: volume ${mount.name} of --${flag} is not a Secret`)) {
      continue;
    }
    secretNames.add(secret.secretName);
    expect(path.relative(mount.mountPath, file) === key, `${where}: --${flag}=${file} does not read the Secret key ${key}`);
    const mode = secret.defaultMode ?? 0o644;
    expect((mode & 0o007) === 0, `${where}: Secret volume ${mount.name} has defaultMode ${mode.toString(8)}, readable by every user`);
    expect((mode & 0o040) !== 0, `${where}: Secret volume ${mount.name} has defaultMode ${mode.toString(8)}, not readable by its group; use 0440`);
    expect(podSpec.securityContext?.fsGroup === podSpec.securityContext?.runAsGroup,
      `${where}: fsGroup differs from runAsGroup, so the container's group cannot read the Secret files`);
  }
  if (isServer) {
    expect(flagValue(args, "tls_require_client_cert") === "true", `${where}: --tls_require_client_cert=true is missing`);
  }
  expect(secretNames.size === 1, `${where}: the --tls_* files come from ${secretNames.size} Secrets; expected 1`);
  return [...secretNames][0];
}

// Makes the Secret with deploy/k8s/make-tls-secret.sh for `namespace` and
// checks it against the workloads: schema, name, type and keys, and that its
// certificate verifies against its CA for every host name in `hosts`.
function checkTlsSecret(sourceDir, namespace, secretName, hosts, where) {
  const temporary = fs.mkdtempSync(path.join(os.tmpdir(), "synthgrad-tls-"));
  try {
    const outDir = path.join(temporary, "out");
    const script = path.join(sourceDir, "deploy/k8s/make-tls-secret.sh");
    const result = childProcess.spawnSync(script, ["--namespace", namespace, "--days", "2", outDir], {
      encoding: "utf8",
      timeout: 60000,
    });
    if (!expect(result.status === 0, `${where}: ${script} failed (exit ${result.status ?? result.signal}): ${result.stderr}`)) {
      return;
    }
    const secretFile = path.join(outDir, `${secretName}-secret.yaml`);
    if (!expect(fs.existsSync(secretFile), `${where}: make-tls-secret.sh wrote no ${secretName}-secret.yaml, so the mounted Secret ${secretName} has no maker`)) {
      return;
    }
    const secret = YAML.parse(fs.readFileSync(secretFile, "utf8"));
    validateDocument(secret, `${where} ${secretName}-secret.yaml`).forEach((error) => expect(false, error));
    expect(secret.metadata?.name === secretName, `${where}: the Secret is named ${secret.metadata?.name}; the workloads mount ${secretName}`);
    expect(secret.metadata?.namespace === namespace, `${where}: the Secret is in namespace ${secret.metadata?.namespace}; expected ${namespace}`);
    expect(secret.type === "kubernetes.io/tls", `${where}: the Secret has type ${secret.type}; expected kubernetes.io/tls`);
    for (const key of Object.values(TLS_FILE_KEYS)) {
      if (expect(secret.data?.[key], `${where}: the Secret has no key ${key}`)) {
        fs.writeFileSync(path.join(temporary, key), Buffer.from(secret.data[key], "base64"));
      }
    }
    for (const host of hosts) {
      const verify = childProcess.spawnSync("openssl", ["verify", "-CAfile", path.join(temporary, "ca.crt"),
        "-verify_hostname", host, path.join(temporary, "tls.crt")], { encoding: "utf8", timeout: 30000 });
      expect(verify.status === 0, `${where}: the Secret's certificate does not verify for ${host}: ${verify.stdout}${verify.stderr}${verify.error ?? ""}`);
    }
  } finally {
    fs.rmSync(temporary, { recursive: true, force: true });
  }
}

// Checks that the groups, the coordinator and the Job use TLS together and
// from one Secret, and that the overlays of TLS_OVERLAYS use it.
function checkTls(sourceDir, namespace, statefulSet, deployment, job, hosts, where) {
  const secrets = [
    checkWorkloadTls(statefulSet, true, `${where} StatefulSet`),
    checkWorkloadTls(deployment, true, `${where} Deployment`),
    checkWorkloadTls(job, false, `${where} Job`),
  ];
  const used = secrets.filter((name) => name !== undefined);
  if (TLS_OVERLAYS.includes(where)) {
    expect(used.length === secrets.length, `${where}: the groups, the coordinator and the Job must all use mutual TLS`);
  }
  if (used.length === 0) {
    return "plaintext";
  }
  if (!expect(used.length === secrets.length && new Set(used).size === 1,
    `${where}: the groups, coordinator and Job use the TLS Secrets ${secrets.join(", ")}; expected one Secret for all three`)) {
    return "TLS wiring invalid";
  }
  checkTlsSecret(sourceDir, namespace, used[0], hosts, where);
  return `mutual TLS from Secret ${used[0]}`;
}

// Checks that a server's --checkpoint_dir lies on a writable volume that
// outlives the pod: a claim of the StatefulSet's volumeClaimTemplates or a
// PersistentVolumeClaim of the overlay.
function checkCheckpointVolume(workload, container, claims, where) {
  const folder = flagValue(container.command ?? [], "checkpoint_dir");
  if (!expect(folder, `${where}: no --checkpoint_dir, so a restarted pod cannot rejoin its job`)) {
    return;
  }
  const mount = (container.volumeMounts ?? []).find(
    (entry) => folder === entry.mountPath || folder.startsWith(`${entry.mountPath}/`));
  if (!expect(mount, `${where}: --checkpoint_dir=${folder} is on no volumeMount`)) {
    return;
  }
  expect(!mount.readOnly, `${where}: the checkpoint volume ${mount.name} is mounted read-only`);
  const templates = (workload.spec.volumeClaimTemplates ?? []).map((template) => template.metadata?.name);
  const volume = (workload.spec.template.spec.volumes ?? []).find((entry) => entry.name === mount.name);
  const claim = volume?.persistentVolumeClaim?.claimName;
  expect(templates.includes(mount.name) || (claim !== undefined && claims.includes(claim)),
    `${where}: the checkpoint volume ${mount.name} is neither a volumeClaimTemplate nor a PersistentVolumeClaim of the overlay`);
}

function checkOverlay(ctl, sourceDir, file, groupCount) {
  const where = path.basename(file, ".yaml");
  const errorsBefore = errors.length;
  const objects = YAML.parseAllDocuments(fs.readFileSync(file, "utf8")).map((doc) => doc.toJS()).filter(Boolean);
  const find = (kind, predicate = () => true) => objects.filter((object) => object.kind === kind && predicate(object));

  const namespace = find("Namespace")[0]?.metadata?.name;
  expect(namespace, `${where}: no Namespace`);
  for (const object of objects.filter((object) => object.kind !== "Namespace")) {
    expect(object.metadata?.namespace === namespace, `${where}: ${object.kind}/${object.metadata?.name} is not in namespace ${namespace}`);
  }

  // StatefulSet and headless Service of the groups.
  const statefulSet = find("StatefulSet")[0];
  if (!expect(statefulSet, `${where}: no StatefulSet`)) {
    return;
  }
  const serviceName = statefulSet.spec.serviceName;
  expect(statefulSet.spec.replicas === groupCount, `${where}: StatefulSet replicas ${statefulSet.spec.replicas}; expected ${groupCount}`);
  expect(statefulSet.spec.podManagementPolicy === "Parallel", `${where}: StatefulSet podManagementPolicy is not Parallel`);
  const groupTemplate = statefulSet.spec.template;
  const group = checkServerContainer(groupTemplate, groupTemplate.spec.containers[0], `${where} StatefulSet`);
  const headless = find("Service", (service) => service.metadata.name === serviceName)[0];
  expect(headless?.spec?.clusterIP === "None", `${where}: Service ${serviceName} is missing or not headless`);
  checkServicePorts(headless, group.port, group.metricsPort, `${where} Service/${serviceName}`);
  const claims = find("PersistentVolumeClaim").map((claim) => claim.metadata.name);
  checkCheckpointVolume(statefulSet, groupTemplate.spec.containers[0], claims, `${where} StatefulSet`);

  // Coordinator Deployment and Service.
  const deployment = find("Deployment", (object) => object.metadata.name === "coordinator")[0];
  if (!expect(deployment, `${where}: no Deployment coordinator`)) {
    return;
  }
  const coordinatorContainer = deployment.spec.template.spec.containers[0];
  const coordinator = checkServerContainer(deployment.spec.template, coordinatorContainer, `${where} Deployment`);
  checkCheckpointVolume(deployment, coordinatorContainer, claims, `${where} Deployment`);
  checkServicePorts(find("Service", (service) => service.metadata.name === "coordinator")[0],
    coordinator.port, coordinator.metricsPort, `${where} Service/coordinator`);
  const coordinatorTarget = `dns:///coordinator.$(POD_NAMESPACE).svc.cluster.local:${coordinator.port}`;
  expect(flagValue(coordinatorContainer.command, "advertise_address") === coordinatorTarget,
    `${where}: coordinator --advertise_address is not ${coordinatorTarget}`);

  // Job and the spec ConfigMap it mounts.
  const job = find("Job")[0];
  if (!expect(job, `${where}: no Job`)) {
    return;
  }
  const jobSpec = job.spec.template.spec;
  const jobContainer = jobSpec.containers[0];
  expect(flagValue(jobContainer.command, "coordinator") === coordinatorTarget, `${where}: Job --coordinator is not ${coordinatorTarget}`);
  const specFlag = flagValue(jobContainer.command, "spec") ?? "";
  const mount = (jobContainer.volumeMounts ?? []).find((entry) => specFlag.startsWith(`${entry.mountPath}/`));
  if (!expect(mount, `${where}: Job --spec ${specFlag} is not on a mounted volume`)) {
    return;
  }
  const configMapName = jobSpec.volumes.find((volume) => volume.name === mount.name)?.configMap?.name;
  const configMap = find("ConfigMap", (object) => object.metadata.name === configMapName)[0];
  const specText = configMap?.data?.[specFlag.slice(mount.mountPath.length + 1)];
  if (!expect(specText, `${where}: ConfigMap ${configMapName} has no key for --spec ${specFlag}`)) {
    return;
  }
  const temporary = fs.mkdtempSync(path.join(os.tmpdir(), "synthgrad-spec-"));
  const specPath = path.join(temporary, "job-spec.textproto");
  fs.writeFileSync(specPath, specText);
  const trainFlags = jobContainer.command.slice(2).filter((arg) => arg.startsWith("--") && !/^--(spec|coordinator)=/.test(arg));
  const count = validatedGroupCount(ctl, specPath, trainFlags, `${where} ConfigMap ${configMapName}`);
  fs.rmSync(temporary, { recursive: true });
  expect(count === groupCount, `${where}: ConfigMap spec has ${count} groups; expected ${groupCount}`);
  const expectedAddresses = Array.from({ length: groupCount },
    (_, index) => `dns:///${statefulSet.metadata.name}-${index}.${serviceName}.${namespace}.svc.cluster.local:${group.port}`);
  const addresses = specAddresses(specText);
  expect(JSON.stringify(addresses) === JSON.stringify(expectedAddresses),
    `${where}: spec group addresses ${addresses.join(", ")}; expected ${expectedAddresses.join(", ")}`);
  const reference = fs.readFileSync(path.join(sourceDir, DEFAULT_SPEC), "utf8");
  expect(specSkeleton(specText) === specSkeleton(reference),
    `${where}: the ConfigMap spec differs from ${DEFAULT_SPEC} in more than group addresses and comments`);

  // One NetworkPolicy per group that admits the coordinator and exactly the
  // neighbouring groups on the gRPC port.
  const podNameKey = "statefulset.kubernetes.io/pod-name";
  for (let index = 0; index < groupCount; index += 1) {
    const podName = `${statefulSet.metadata.name}-${index}`;
    const policies = find("NetworkPolicy", (policy) => policy.spec.podSelector?.matchLabels?.[podNameKey] === podName);
    if (!expect(policies.length === 1, `${where}: ${policies.length} NetworkPolicies select ${podName}; expected 1`)) {
      continue;
    }
    const rules = policies[0].spec.ingress ?? [];
    const peers = rules.flatMap((rule) => rule.from ?? []).map((peer) =>
      peer.podSelector?.matchLabels?.[podNameKey] ?? `component=${peer.podSelector?.matchLabels?.["app.kubernetes.io/component"]}`);
    const neighbours = [index - 1, index + 1].filter((peer) => peer >= 0 && peer < groupCount)
      .map((peer) => `${statefulSet.metadata.name}-${peer}`);
    expect(JSON.stringify(peers.sort()) === JSON.stringify(["component=coordinator", ...neighbours].sort()),
      `${where}: NetworkPolicy for ${podName} admits ${peers.join(", ")}; expected the coordinator and ${neighbours.join(", ")}`);
    const ports = rules.flatMap((rule) => rule.ports ?? []).map((entry) => entry.port);
    expect(JSON.stringify(ports) === JSON.stringify([group.port]), `${where}: NetworkPolicy for ${podName} opens ports ${ports}; expected ${group.port}`);
  }

  // Every host name that a TLS client checks: the groups of the spec and the
  // coordinator target of the groups and the Job.
  const hosts = [...addresses, coordinatorTarget.replace("$(POD_NAMESPACE)", namespace)]
    .map((target) => target.replace(/^dns:\/\/\//, "").replace(/:\d+$/, ""));
  const tls = checkTls(sourceDir, namespace, statefulSet, deployment, job, hosts, where);
  if (errors.length > errorsBefore) {
    return;
  }
  console.log(`ok ${where}: ${groupCount} groups at ${addresses[0]} ..., coordinator on ${coordinator.port}, namespace ${namespace}, ${tls}`);
}

function main() {
  if (process.argv.length !== 5) {
    console.error("usage: cross_check.cjs BUILD_DIR SOURCE_DIR RENDERED_DIR");
    process.exit(2);
  }
  const [buildDir, sourceDir, renderedDir] = process.argv.slice(2);
  const ctl = path.join(buildDir, "services/ctl/synthgradctl");
  const groupCount = validatedGroupCount(ctl, path.join(sourceDir, DEFAULT_SPEC), [], DEFAULT_SPEC);
  if (groupCount > 0) {
    console.log(`${DEFAULT_SPEC}: ${groupCount} groups`);
    checkCompose(ctl, sourceDir, groupCount);
    const files = fs.readdirSync(renderedDir).filter((name) => name.endsWith(".yaml"));
    expect(files.length > 0, `${renderedDir}: no rendered overlays`);
    for (const name of files) {
      checkOverlay(ctl, sourceDir, path.join(renderedDir, name), groupCount);
    }
  }
  if (errors.length > 0) {
    errors.forEach((error) => console.error(`FAILED ${error}`));
    process.exit(1);
  }
  console.log("PASSED");
}

main();
