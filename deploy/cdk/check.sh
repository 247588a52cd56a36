#!/usr/bin/env bash
# Synthesize the CDK app offline and check that every resource and output of
# infra/template.yaml is in the cloud assembly. aws-cdk-lib lives in its own venv
# (.venv-cdk), never in the project's dependencies. Needs Node.js (no CDK CLI).
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
if [ ! -x .venv-cdk/bin/python ]; then
    python3 -m venv .venv-cdk
fi
.venv-cdk/bin/pip install -q --disable-pip-version-check -r deploy/cdk/requirements.txt
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION=1 JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION=1 \
    CDK_OUTDIR="$out" .venv-cdk/bin/python deploy/cdk/app.py
.venv-cdk/bin/python - "$root/infra/template.yaml" "$out/durable.template.json" <<'PY'
import json
import re
import sys

source = open(sys.argv[1], encoding="utf-8").read()
resources_text = source.split("\nResources:\n", 1)[1].split("\nOutputs:\n", 1)[0]
expected = set(re.findall(r"^  (\w+):$", resources_text, re.MULTILINE))
outputs = set(re.findall(r"^  (\w+):$", source.split("\nOutputs:\n", 1)[1], re.MULTILINE))
synthesized = json.load(open(sys.argv[2], encoding="utf-8"))
missing = expected - set(synthesized.get("Resources", {}))
missing_outputs = outputs - set(synthesized.get("Outputs", {}))
assert len(expected) >= 20, f"read only {len(expected)} resources from {sys.argv[1]}"
assert not missing, f"resources missing from the CDK synth: {sorted(missing)}"
assert not missing_outputs, f"outputs missing from the CDK synth: {sorted(missing_outputs)}"
params = synthesized.get("Parameters", {})
assert "CodeBucket" not in params and "CodeKey" not in params, "code location not bound"
print(f"cdk synth ok: {len(expected)} resources, {len(outputs)} outputs")
PY
