#!/usr/bin/env bash
# Validates deploy/kubernetes/ without a cluster: core objects (Deployment, Service)
# against the Kubernetes OpenAPI schemas with kubernetes-validate in strict mode (unknown
# fields are errors), the Gateway API objects (InferencePool, HTTPRoute) against the JSON
# schemas in deploy/kubernetes/schemas/ (written from their v1 API references). Then checks
# that the checker catches mistakes: copies with a misspelled field must fail. The tools go
# in a virtual environment (target/venv-k8s) from deploy/kubernetes/requirements.txt.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${PAGEDATTN_K8S_VENV:-target/venv-k8s}"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r deploy/kubernetes/requirements.txt

check() { # files...: 0 when every object of every file is valid
    "$venv/bin/python" - "$@" <<'PY'
import json, subprocess, sys, tempfile, os
import jsonschema, yaml

here = "deploy/kubernetes/schemas"
schemas = {
    ("inference.networking.k8s.io/v1", "InferencePool"): "inferencepool-v1.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproute-v1.json",
}
bad = 0
for path in sys.argv[1:]:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for i, doc in enumerate(docs):
        what = f"{path} #{i + 1} {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in schemas:
            with open(os.path.join(here, schemas[key])) as f:
                schema = json.load(f)
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
            for e in errors:
                print(f"{what}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
            bad += bool(errors)
        else:
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as t:
                yaml.safe_dump(doc, t)
            r = subprocess.run(
                [os.path.join(os.path.dirname(sys.executable), "kubernetes-validate"), "--strict", "--quiet", t.name],
                capture_output=True, text=True,
            )
            os.unlink(t.name)
            if r.returncode != 0:
                print(f"{what}: {(r.stdout + r.stderr).strip()}")
                bad += 1
        if not bad:
            print(f"{what}: valid")
sys.exit(1 if bad else 0)
PY
}

echo "== manifests"
check deploy/kubernetes/*.yaml

echo "== the checker refuses broken copies"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
n=0
for edit in \
    "deployment.yaml s/containerPort:/containerPorts:/" \
    "deployment.yaml s/periodSeconds: 2/periodSeconds: two/" \
    "service.yaml s/targetPort: http/targetPorts: http/" \
    "inferencepool.yaml s/targetPorts:/targetPort:/" \
    "inferencepool.yaml s/failureMode: FailClose/failureMode: Sometimes/" \
    "inferencepool.yaml s/number: 9002/number: 90020/" \
    "inferencepool.yaml s/request: 600s/request: ten minutes/"; do
    file="${edit%% *}" expr="${edit#* }"
    n=$((n + 1))
    sed "$expr" "deploy/kubernetes/$file" >"$tmp/$n-$file"
    cmp -s "$tmp/$n-$file" "deploy/kubernetes/$file" && { echo "check-manifests: '$expr' changed nothing in $file" >&2; exit 1; }
    if check "$tmp/$n-$file" >"$tmp/out" 2>&1; then
        cat "$tmp/out" >&2
        echo "check-manifests: a broken $file ($expr) passed" >&2
        exit 1
    fi
    echo "refused: $file with $expr"
done
echo "check-manifests: all valid; $n broken copies refused"
