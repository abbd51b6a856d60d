#!/usr/bin/env node
// Injects typical typos into each rendered overlay and checks that
// validate_manifests.cjs rejects each one with the expected message, and
// that it accepts the overlay as rendered.
//
// Usage: NODE_PATH=DIR/node_modules validate_typos.cjs FILE_OR_DIR...
"use strict";

const fs = require("fs");

const { loadModule } = require("./node_modules.cjs");
const { validateText, parseDocuments, yamlFiles } = require("./validate_manifests.cjs");

// Each case replaces the first match of `pattern` and names a fragment of the
// error that validate_manifests.cjs must report. A case with `appliesTo` runs
// only on files that match it: overlays with TLS have TCP probes in place of
// gRPC probes, and only they mount Secrets. Every case must run on at least
// one file.
const GRPC_PROBE = /grpc:\n\s+port: \d+/;
const TCP_PROBE = /tcpSocket:\n\s+port: \d+/;
const CASES = [
  {
    name: "unknown field (capitalisation)",
    pattern: /readOnlyRootFilesystem: true/,
    replacement: "readOnlyRootFileSystem: true",
    expected: "readOnlyRootFileSystem: unknown field",
  },
  {
    name: "unknown field (misspelt)",
    pattern: /podManagementPolicy: Parallel/,
    replacement: "podManagmentPolicy: Parallel",
    expected: "podManagmentPolicy: unknown field",
  },
  {
    name: "unknown field inside a gRPC probe",
    appliesTo: GRPC_PROBE,
    pattern: /grpc:\n(\s+)port: (\d+)/,
    replacement: "grpc:\n$1port: $2\n$1servce: synthgrad.v1.LayerService",
    expected: "grpc.servce: unknown field",
  },
  {
    name: "wrong type (string for integer)",
    pattern: /replicas: \d+/,
    replacement: "replicas: three",
    expected: "replicas must be integer",
  },
  {
    name: "wrong type (string for boolean)",
    pattern: /runAsNonRoot: true/,
    replacement: "runAsNonRoot: \"yes\"",
    expected: "runAsNonRoot must be boolean",
  },
  {
    name: "wrong type (string for list)",
    pattern: /drop:\n(\s+)- ALL/,
    replacement: "drop: ALL",
    expected: "drop must be array",
  },
  {
    name: "named port on a gRPC liveness probe",
    appliesTo: GRPC_PROBE,
    pattern: /(livenessProbe:\n(?:\s+\w+: \S+\n)*\s+grpc:\n\s+port: )\d+/,
    replacement: "$1grpc",
    expected: "livenessProbe/grpc/port must be integer",
  },
  {
    name: "named port on a gRPC readiness probe",
    appliesTo: GRPC_PROBE,
    pattern: /(readinessProbe:\n(?:\s+\w+: \S+\n)*\s+grpc:\n\s+port: )\d+/,
    replacement: "$1grpc",
    expected: "readinessProbe/grpc/port must be integer",
  },
  {
    name: "unknown field inside a TCP probe",
    appliesTo: TCP_PROBE,
    pattern: /tcpSocket:\n(\s+)port: (\d+)/,
    replacement: "tcpSocket:\n$1port: $2\n$1hots: localhost",
    expected: "tcpSocket.hots: unknown field",
  },
  {
    name: "Secret volume field in lower case",
    appliesTo: /secretName: /,
    pattern: /secretName: /,
    replacement: "secretname: ",
    expected: "secretname: unknown field",
  },
  {
    name: "octal file mode as a string",
    appliesTo: /defaultMode: \d+/,
    pattern: /defaultMode: \d+/,
    replacement: "defaultMode: \"0440\"",
    expected: "defaultMode must be integer",
  },
];

// Runs every case that applies to one file, adds the names of those cases to
// `casesRun`, and returns the number of failed checks.
function checkFile(file, casesRun) {
  const text = fs.readFileSync(file, "utf8");
  let failures = 0;

  const cleanErrors = validateText(text, file);
  if (cleanErrors.length > 0) {
    failures += 1;
    console.error(`FAILED ${file} as rendered: expected no errors, got:\n  ${cleanErrors.join("\n  ")}`);
  } else {
    console.log(`ok ${file} as rendered: valid`);
  }

  for (const { name, appliesTo, pattern, replacement, expected } of CASES) {
    if (appliesTo !== undefined && !appliesTo.test(text)) {
      continue;
    }
    casesRun.add(name);
    if (!pattern.test(text)) {
      failures += 1;
      console.error(`FAILED ${file}, ${name}: ${pattern} does not occur; update the case`);
      continue;
    }
    const errors = validateText(text.replace(pattern, replacement), file);
    if (errors.some((error) => error.includes(expected))) {
      console.log(`ok ${name}: rejected with "${errors[0]}"`);
    } else {
      failures += 1;
      console.error(`FAILED ${file}, ${name}: expected an error containing "${expected}", got ${JSON.stringify(errors)}`);
    }
  }
  return failures;
}

// Prints whether kubernetes-models alone lets an unknown field through,
// which is why validate_manifests.cjs adds its strict walk.
function reportLenientSchema(file) {
  const { StatefulSet } = loadModule("kubernetes-models/apps/v1/StatefulSet");
  const text = fs.readFileSync(file, "utf8").replace(CASES[1].pattern, CASES[1].replacement);
  const statefulSet = parseDocuments(text, file).docs.find(({ doc }) => doc.kind === "StatefulSet");
  if (statefulSet === undefined) {
    return;
  }
  try {
    new StatefulSet(statefulSet.doc).validate();
    console.log("note: kubernetes-models alone accepts the unknown field podManagmentPolicy");
  } catch (error) {
    console.log(`note: kubernetes-models alone rejects the unknown field: ${error.message}`);
  }
}

function main() {
  const files = yamlFiles(process.argv.slice(2));
  if (files.length === 0) {
    console.error("usage: validate_typos.cjs FILE_OR_DIR... (no *.yaml file given)");
    process.exit(2);
  }
  let failures = 0;
  const casesRun = new Set();
  for (const file of files) {
    failures += checkFile(file, casesRun);
  }
  for (const { name } of CASES.filter((entry) => !casesRun.has(entry.name))) {
    failures += 1;
    console.error(`FAILED ${name}: applies to none of the files; update the case`);
  }
  reportLenientSchema(files[0]);
  if (failures > 0) {
    console.error(`${failures} checks failed`);
    process.exit(1);
  }
  console.log("PASSED");
}

main();
