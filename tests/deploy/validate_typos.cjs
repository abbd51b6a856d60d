#!/usr/bin/env node
// Injects typical typos into a rendered overlay and checks that
// validate_manifests.cjs rejects each one with the expected message, and
// that it accepts the overlay as rendered.
//
// Usage: NODE_PATH=DIR/node_modules validate_typos.cjs RENDERED.yaml
"use strict";

const fs = require("fs");

const { loadModule } = require("./node_modules.cjs");
const { validateText, parseDocuments } = require("./validate_manifests.cjs");

// Each case replaces the first match of `pattern` and names a fragment of the
// error that validate_manifests.cjs must report.
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
    pattern: /(livenessProbe:\n(?:\s+\w+: \S+\n)*\s+grpc:\n\s+port: )\d+/,
    replacement: "$1grpc",
    expected: "livenessProbe/grpc/port must be integer",
  },
  {
    name: "named port on a gRPC readiness probe",
    pattern: /(readinessProbe:\n(?:\s+\w+: \S+\n)*\s+grpc:\n\s+port: )\d+/,
    replacement: "$1grpc",
    expected: "readinessProbe/grpc/port must be integer",
  },
];

function main() {
  if (process.argv.length !== 3) {
    console.error("usage: validate_typos.cjs RENDERED.yaml");
    process.exit(2);
  }
  const file = process.argv[2];
  const text = fs.readFileSync(file, "utf8");
  let failures = 0;

  const cleanErrors = validateText(text, file);
  if (cleanErrors.length > 0) {
    failures += 1;
    console.error(`FAILED ${file} as rendered: expected no errors, got:\n  ${cleanErrors.join("\n  ")}`);
  } else {
    console.log(`ok ${file} as rendered: valid`);
  }

  for (const { name, pattern, replacement, expected } of CASES) {
    if (!pattern.test(text)) {
      failures += 1;
      console.error(`FAILED ${name}: ${pattern} does not occur in ${file}; update the case`);
      continue;
    }
    const errors = validateText(text.replace(pattern, replacement), file);
    if (errors.some((error) => error.includes(expected))) {
      console.log(`ok ${name}: rejected with "${errors[0]}"`);
    } else {
      failures += 1;
      console.error(`FAILED ${name}: expected an error containing "${expected}", got ${JSON.stringify(errors)}`);
    }
  }

  // Records whether kubernetes-models alone would have let an unknown field
  // through, which is why validate_manifests.cjs adds its strict walk.
  const { StatefulSet } = loadModule("kubernetes-models/apps/v1/StatefulSet");
  const statefulSet = parseDocuments(text.replace(CASES[1].pattern, CASES[1].replacement), file)
    .docs.find(({ doc }) => doc.kind === "StatefulSet").doc;
  try {
    new StatefulSet(statefulSet).validate();
    console.log("note: kubernetes-models alone accepts the unknown field podManagmentPolicy");
  } catch (error) {
    console.log(`note: kubernetes-models alone rejects the unknown field: ${error.message}`);
  }

  if (failures > 0) {
    console.error(`${failures} of ${CASES.length + 1} checks failed`);
    process.exit(1);
  }
  console.log("PASSED");
}

main();
