// Validates the manifests of deploy/kubernetes against the Kubernetes API
// schema, offline, two ways:
//  1. kubernetes-models' validate() (JSON schema: types, required fields,
//     enums, formats);
//  2. tsc --noEmit --strict over each object written as a literal of its
//     interface (IDaemonSet, ...), whose excess-property check catches
//     unknown and misspelled fields, which the schema lets through.
// Then it breaks copies of the DaemonSet in ways a person might, and checks
// that each broken copy is caught.
//
//   node validate.mjs REPO_DIR WORK_DIR     (exit 0: all as expected)
// WORK_DIR must lie below the directory whose node_modules holds the pinned
// packages (package.json beside this file), for tsc to resolve them.
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { DaemonSet } from "kubernetes-models/apps/v1/DaemonSet";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Namespace } from "kubernetes-models/v1/Namespace";

const [repo, work] = process.argv.slice(2);
if (!repo || !work) {
  console.error("usage: node validate.mjs REPO_DIR WORK_DIR");
  process.exit(2);
}
const manifests = join(repo, "deploy", "kubernetes");

// Every kind deploy/kubernetes may hold: its model and its TypeScript type.
const kinds = {
  "apps/v1 DaemonSet": { model: DaemonSet, module: "apps/v1/DaemonSet", type: "IDaemonSet" },
  "v1 ConfigMap": { model: ConfigMap, module: "v1/ConfigMap", type: "IConfigMap" },
  "v1 Namespace": { model: Namespace, module: "v1/Namespace", type: "INamespace" },
};
const notObjects = new Set(["kustomization.yaml"]);  // kustomize's, not the API's

// Each case: a name, an object, its kind. Filled below, checked at the end.
const cases = [];
let daemonSet;
for (const file of readdirSync(manifests).filter((f) => f.endsWith(".yaml")).sort()) {
  if (notObjects.has(file)) continue;
  const docs = parseAllDocuments(readFileSync(join(manifests, file), "utf8"));
  docs.forEach((doc, i) => {
    if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0].message}`);
    const obj = doc.toJS();
    if (obj === null) return;
    const kind = `${obj.apiVersion} ${obj.kind}`;
    if (!kinds[kind]) throw new Error(`${file}: no validator for ${kind}: add one here`);
    cases.push({ name: `${file}#${i}`, obj, kind, good: true });
    if (obj.kind === "DaemonSet") daemonSet = obj;
  });
}
if (!daemonSet) throw new Error(`no DaemonSet in ${manifests}`);

// Broken copies of the DaemonSet.
const podSpec = (o) => o.spec.template.spec;
const fsd = (o) => podSpec(o).containers.find((c) => c.name === "fsd");
const broken = {
  // A misspelled field: Kubernetes would drop it (no Bidirectional: the
  // mount never reaches the node).
  mountPropogation(o) {
    const m = fsd(o).volumeMounts.find((v) => v.mountPropagation);
    m.mountPropogation = m.mountPropagation;
    delete m.mountPropagation;
  },
  // A Deployment's field in a DaemonSet (it has updateStrategy).
  "Deployment-only strategy"(o) {
    o.spec.strategy = { type: "RollingUpdate" };
  },
  "privileged: \"yes\""(o) {
    fsd(o).securityContext.privileged = "yes";
  },
  // Not one of Always, IfNotPresent, Never.
  "bad enum imagePullPolicy"(o) {
    fsd(o).imagePullPolicy = "Sometimes";
  },
  // A misspelled required field.
  "nme: instead of name:"(o) {
    const c = fsd(o);
    c.nme = c.name;
    delete c.name;
  },
};
let unbreakable = 0;  // a DaemonSet so changed that a case no longer applies
for (const [name, breakIt] of Object.entries(broken)) {
  const obj = structuredClone(daemonSet);
  try {
    breakIt(obj);
  } catch (e) {
    console.log(`FAIL broken: ${name}: cannot break this DaemonSet so: ${e.message}`);
    unbreakable++;
    continue;
  }
  cases.push({ name: `broken: ${name}`, obj, kind: "apps/v1 DaemonSet", good: false });
}

// 1. The schema.
for (const c of cases) {
  c.errors = [];
  try {
    new kinds[c.kind].model(c.obj).validate();
  } catch (e) {
    c.errors.push(`validate(): ${e.message.split("\n")[0]}`);
  }
}

// 2. The types: one .ts file per case, one tsc run.
mkdirSync(work, { recursive: true });
cases.forEach((c, i) => {
  const { module, type } = kinds[c.kind];
  c.file = `case${String(i).padStart(2, "0")}.ts`;
  writeFileSync(
    join(work, c.file),
    `// ${c.name}\nimport type { ${type} } from "kubernetes-models/${module}";\n` +
      `export const manifest: ${type} = ${JSON.stringify(c.obj, null, 2)};\n`,
  );
});
writeFileSync(
  join(work, "tsconfig.json"),
  JSON.stringify({
    compilerOptions: {
      strict: true, noEmit: true, module: "nodenext", moduleResolution: "nodenext",
      target: "es2022", skipLibCheck: true, types: [],
    },
    files: cases.map((c) => c.file),
  }),
);
let tscOut = "";
try {
  const tsc = createRequire(join(work, "x.js")).resolve("typescript/bin/tsc");
  execFileSync(process.execPath, [tsc, "-p", ".", "--pretty", "false"], {
    cwd: work, encoding: "utf8",
  });
} catch (e) {
  if (e.stdout === undefined) throw e;
  tscOut = e.stdout;
}
for (const line of tscOut.split("\n").filter(Boolean)) {
  const c = cases.find((k) => line.startsWith(k.file + "("));
  if (!c) throw new Error(`tsc: ${line}`);  // an error in no case: our own setup
  c.errors.push(`tsc: ${line.slice(c.file.length)}`);
}

// The verdict: good manifests pass both; each broken copy is caught.
let failed = unbreakable;
for (const c of cases) {
  const ok = c.good ? c.errors.length === 0 : c.errors.length > 0;
  if (!ok) failed++;
  const verdict = c.good ? (ok ? "valid" : "INVALID") : ok ? "caught" : "NOT CAUGHT";
  console.log(`${ok ? "ok  " : "FAIL"} ${c.name}: ${verdict}`);
  for (const e of c.errors) console.log(`       ${e}`);
}
console.log(failed ? `manifests: ${failed} failed` : `manifests: all ${cases.length} as expected`);
process.exit(failed ? 1 : 0);
