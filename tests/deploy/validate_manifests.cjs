#!/usr/bin/env node
// Validates Kubernetes manifests against the API schemas of the npm package
// kubernetes-models, and rejects fields that the schemas do not define.
//
// kubernetes-models checks types, enums and required fields but accepts
// unknown fields, as the API server's lenient decoding does. The strict
// check walks each object along the TypeScript declarations that the package
// generates from the same OpenAPI schemas, and reports every key that the
// declared type neither lists nor allows through an index signature
// (additionalProperties: false semantics).
//
// Usage: NODE_PATH=DIR/node_modules validate_manifests.cjs FILE_OR_DIR...
// A folder stands for the *.yaml files in it. Exits 0 and prints PASSED when
// every document of every file is valid.
"use strict";

const fs = require("fs");
const path = require("path");

const { loadModule } = require("./node_modules.cjs");
const YAML = loadModule("yaml");
const ts = loadModule("typescript");

const modelsDir = path.dirname(loadModule("kubernetes-models/package.json", true));

// Returns the folder of an apiVersion inside kubernetes-models: "v1" for the
// core group, "apps/v1" for apps/v1 and so on.
function modelPath(apiVersion, kind) {
  return path.join(modelsDir, apiVersion, kind);
}

// Validates `doc` with its kubernetes-models class; returns error messages.
function validateSchema(doc, where) {
  const modulePath = modelPath(doc.apiVersion, doc.kind);
  if (!fs.existsSync(`${modulePath}.js`)) {
    return [`${where}: no kubernetes-models schema for apiVersion ${doc.apiVersion}, kind ${doc.kind}`];
  }
  const Model = require(modulePath)[doc.kind];
  try {
    new Model(doc).validate();
    return [];
  } catch (error) {
    return [`${where}: ${error.message}`];
  }
}

// Type checker over the declaration files of the kinds seen so far.
class StrictChecker {
  constructor() {
    this.program = null;
    this.files = new Set();
  }

  // Returns the declared type of interface I<kind>, recompiling when a new
  // kind appears.
  rootType(apiVersion, kind) {
    const file = `${modelPath(apiVersion, kind)}.d.ts`;
    if (!this.files.has(file)) {
      this.files.add(file);
      this.program = ts.createProgram([...this.files], {
        noEmit: true,
        skipLibCheck: true,
        types: [],
      });
      this.checker = this.program.getTypeChecker();
    }
    const source = this.program.getSourceFile(file);
    const moduleSymbol = this.checker.getSymbolAtLocation(source);
    const symbol = this.checker
      .getExportsOfModule(moduleSymbol)
      .find((exported) => exported.name === `I${kind}`);
    if (symbol === undefined) {
      throw new Error(`${file} declares no interface I${kind}`);
    }
    return this.checker.getDeclaredTypeOfSymbol(symbol);
  }

  // Appends to `errors` every key of `value` that `type` does not declare.
  walk(type, value, where, errors) {
    if (value === null || typeof value !== "object") {
      return;  // Scalars: validateSchema checks their types.
    }
    const checker = this.checker;
    type = checker.getNonNullableType(type);
    if (type.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) {
      return;  // Free-form fields such as RawExtension.
    }
    if (type.isUnion()) {
      const candidates = type.types.filter((member) =>
        Array.isArray(value) ? checker.isArrayType(member) : member.flags & ts.TypeFlags.Object);
      if (candidates.length !== 1) {
        errors.push(`${where}: cannot pick one of ${checker.typeToString(type)} for strict checking`);
        return;
      }
      type = candidates[0];
    }
    if (Array.isArray(value)) {
      if (!checker.isArrayType(type)) {
        return;  // validateSchema reports the wrong type.
      }
      const elementType = checker.getTypeArguments(type)[0];
      value.forEach((element, index) => this.walk(elementType, element, `${where}[${index}]`, errors));
      return;
    }
    const indexType = checker.getIndexTypeOfType(type, ts.IndexKind.String);
    for (const [key, child] of Object.entries(value)) {
      const property = checker.getPropertyOfType(type, key);
      if (property !== undefined) {
        const declaration = property.valueDeclaration ?? property.declarations?.[0];
        this.walk(checker.getTypeOfSymbolAtLocation(property, declaration), child, `${where}.${key}`, errors);
      } else if (indexType !== undefined) {
        this.walk(indexType, child, `${where}.${key}`, errors);
      } else {
        errors.push(`${where}.${key}: unknown field; ${checker.typeToString(type)} has no such property`);
      }
    }
  }

  check(doc, where) {
    const errors = [];
    this.walk(this.rootType(doc.apiVersion, doc.kind), doc, where, errors);
    return errors;
  }
}

const strictChecker = new StrictChecker();

// Returns the error messages for one parsed manifest; `where` names it.
function validateDocument(doc, where) {
  if (doc === null || typeof doc !== "object" || !doc.apiVersion || !doc.kind) {
    return [`${where}: not a Kubernetes object (apiVersion or kind missing)`];
  }
  const label = `${where} ${doc.kind}/${doc.metadata?.name ?? "(unnamed)"}`;
  const errors = validateSchema(doc, label);
  if (errors.length > 0) {
    return errors;  // The strict walk needs a known kind and sound types.
  }
  return strictChecker.check(doc, label);
}

// Parses a multi-document YAML text; YAML syntax errors become messages.
function parseDocuments(text, where) {
  const docs = [];
  const errors = [];
  YAML.parseAllDocuments(text).forEach((document, index) => {
    if (document.errors.length > 0) {
      errors.push(...document.errors.map((error) => `${where} document ${index}: ${error.message}`));
    } else if (document.contents !== null) {
      docs.push({ doc: document.toJS(), where: `${where} document ${index}` });
    }
  });
  return { docs, errors };
}

// Returns the error messages for every document of a YAML text.
function validateText(text, where) {
  const { docs, errors } = parseDocuments(text, where);
  for (const { doc, where: docWhere } of docs) {
    errors.push(...validateDocument(doc, docWhere));
  }
  if (docs.length === 0 && errors.length === 0) {
    errors.push(`${where}: no documents`);
  }
  return errors;
}

// Expands folders into the *.yaml files they contain.
function yamlFiles(paths) {
  return paths.flatMap((entry) => (fs.statSync(entry).isDirectory()
    ? fs.readdirSync(entry).filter((name) => name.endsWith(".yaml")).sort().map((name) => path.join(entry, name))
    : [entry]));
}

module.exports = { validateDocument, validateText, parseDocuments, yamlFiles };

if (require.main === module) {
  const files = yamlFiles(process.argv.slice(2));
  if (files.length === 0) {
    console.error("usage: validate_manifests.cjs FILE_OR_DIR... (no *.yaml file given)");
    process.exit(2);
  }
  let failed = 0;
  for (const file of files) {
    const text = fs.readFileSync(file, "utf8");
    const errors = validateText(text, file);
    const count = parseDocuments(text, file).docs.length;
    if (errors.length > 0) {
      failed += 1;
      errors.forEach((error) => console.error(`FAILED ${error}`));
    } else {
      console.log(`ok ${file}: ${count} documents valid`);
    }
  }
  if (failed > 0) {
    console.error(`${failed} of ${files.length} files invalid`);
    process.exit(1);
  }
  console.log("PASSED");
}
