#!/usr/bin/env python3
"""Build every service image of the suite: the one build path used by `make images` and by
the container tests (tests/container/conftest.py).

1. Choose the base: $BASE_IMAGE if set; otherwise python:3.12-slim if it is present or can
   be pulled; otherwise say so and build the Debian-packaged base (images/base/build.sh).
2. Write a fresh build context with the paths the Dockerfiles COPY from: images/ (entrypoint
   scripts) and build/docker/ (the project wheel from `pip wheel --no-deps`, the pinned
   requirements of each extras set a Dockerfile asks for, and the optional CA bundle for
   pip in the build stage: $PIP_CA_BUNDLE, else $PIP_CERT, else none).
3. `docker build` every images/<pattern>/<service>.Dockerfile as
   podpatterns/<service>:<version>-<git short sha>, and print what was built.

    python images/build.py                   # all images
    python images/build.py log-collector     # just these
    python images/build.py --json build/images.json
    python images/build.py --print-tag       # just the tag, build nothing

The last line of stdout is the image tag; --json writes {"base", "tag", "images"}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
# Each run writes its own context, <run dir>/build/docker/ (the paths the Dockerfiles
# COPY from), so concurrent builds (a demo and the tests) never see each other's files.
CONTEXT_PARENT = ROOT / "build" / "contexts"
PUBLIC_BASE = "python:3.12-slim"
PULL_TIMEOUT_S = 120
# What goes into an image: a change here, committed or not, changes the tag.
IMAGE_INPUTS = ("patterns", "images", "pyproject.toml")
REQUIREMENTS_REF = re.compile(r"build/docker/requirements/([a-z0-9-]+)\.txt")


@dataclass(frozen=True)
class ImageSpec:
    service: str  # also the console script and the image name
    pattern: str
    dockerfile: Path


class BuildError(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, check=False, **kwargs)


def image_specs() -> list[ImageSpec]:
    return [
        ImageSpec(service=path.name.removesuffix(".Dockerfile"), pattern=path.parent.name,
                  dockerfile=path)
        for path in sorted(IMAGES.glob("*/*.Dockerfile"))
    ]


def project_metadata() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]


def git_short_sha() -> str:
    result = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True)
    return result.stdout.strip() if result.returncode == 0 else "nogit"


def uncommitted_digest() -> str | None:
    """8 hex digits naming the uncommitted changes to what goes into an image (tracked
    changes and untracked files), None when there are none. Without git, every such file
    counts."""
    digest = hashlib.sha256()
    diff = run(["git", "-C", str(ROOT), "diff", "HEAD", "--binary", "--", *IMAGE_INPUTS],
               capture_output=True)
    if diff.returncode == 0:
        listed = run(["git", "-C", str(ROOT), "ls-files", "--others", "--exclude-standard",
                      "-z", "--", *IMAGE_INPUTS], capture_output=True).stdout
        untracked = sorted(name for name in listed.split("\0") if name)
        if not diff.stdout and not untracked:
            return None
        digest.update(diff.stdout.encode())
    else:
        untracked = sorted(str(path.relative_to(ROOT)) for name in IMAGE_INPUTS
                           for path in [ROOT / name, *(ROOT / name).rglob("*")]
                           if path.is_file() and "__pycache__" not in path.parts)
    for name in untracked:
        digest.update(name.encode() + b"\0" + (ROOT / name).read_bytes())
    return digest.hexdigest()[:8]


def image_tag() -> str:
    """<version>-<git short sha>, plus -dirty-<digest> for uncommitted changes: a tag names
    one content, so an image built from edited code never passes for the commit's."""
    digest = uncommitted_digest()
    suffix = f"-dirty-{digest}" if digest else ""
    return f"{project_metadata()['version']}-{git_short_sha()}{suffix}"


def image_exists(ref: str) -> bool:
    return run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


def choose_base() -> str:
    explicit = os.environ.get("BASE_IMAGE")
    if explicit:
        say(f"base image {explicit} (from $BASE_IMAGE)")
        return explicit
    if image_exists(PUBLIC_BASE):
        say(f"base image {PUBLIC_BASE} (present)")
        return PUBLIC_BASE
    try:
        pulled = run(["docker", "pull", PUBLIC_BASE], capture_output=True,
                     timeout=PULL_TIMEOUT_S)
        reason = (pulled.stderr.strip().splitlines() or ["unknown error"])[-1]
        if pulled.returncode == 0:
            say(f"base image {PUBLIC_BASE} (pulled)")
            return PUBLIC_BASE
    except subprocess.TimeoutExpired:
        reason = f"pull timed out after {PULL_TIMEOUT_S}s"
    say(f"{PUBLIC_BASE} is not available ({reason})")
    say("building the Debian-packaged base image instead (images/base/build.sh)")
    built = run([str(IMAGES / "base" / "build.sh")], stdout=subprocess.PIPE)
    if built.returncode != 0 or not built.stdout.strip():
        raise BuildError("images/base/build.sh failed (see its output above)")
    return built.stdout.strip().splitlines()[-1]


def requirement_sets(specs: list[ImageSpec]) -> set[str]:
    """The requirement files the Dockerfiles copy: `core`, or extras joined by `-`."""
    names: set[str] = set()
    for spec in specs:
        found = REQUIREMENTS_REF.findall(spec.dockerfile.read_text())
        # None is fine: an image without the project in it (the ambassador's PostgreSQL).
        if len(found) > 1:
            raise BuildError(f"{spec.dockerfile} must COPY at most one requirements file")
        names.update(found)
    return names


def write_requirements(context: Path, names: set[str]) -> None:
    project = project_metadata()
    extras = project.get("optional-dependencies", {})
    folder = context / "requirements"
    folder.mkdir(parents=True, exist_ok=True)
    for name in sorted(names):
        wanted = [] if name == "core" else name.split("-")
        unknown = [extra for extra in wanted if extra not in extras]
        if unknown:
            raise BuildError(f"requirements/{name}.txt: no extra {unknown} in pyproject.toml")
        lines = list(project["dependencies"])
        for extra in wanted:
            lines += [req for req in extras[extra] if req not in lines]
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")


def write_ca_bundle(context: Path) -> None:
    # PIP_CA_BUNDLE="" explicitly turns it off; PIP_CERT is pip's own setting on the host.
    source = os.environ.get("PIP_CA_BUNDLE", os.environ.get("PIP_CERT", ""))
    target = context / "pip-ca.crt"
    if source and Path(source).is_file():
        shutil.copyfile(source, target)
        say(f"pip in the build stage trusts {source}")
    else:
        target.write_bytes(b"")


def build_wheel(context: Path) -> None:
    wheels = context / "wheels"
    wheels.mkdir(parents=True)
    say("building the project wheel")
    result = run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                  "--wheel-dir", str(wheels), str(ROOT)])
    if result.returncode != 0:
        raise BuildError("pip wheel failed (see its output above)")


def build_image(spec: ImageSpec, base: str, tag: str, version: str, revision: str,
                run_dir: Path) -> str:
    ref = f"{os.environ.get('IMAGE_PREFIX', 'podpatterns')}/{spec.service}:{tag}"
    say(f"building {ref} from {spec.dockerfile.relative_to(ROOT)}")
    result = run(["docker", "build", "--file", str(spec.dockerfile),
                  "--build-arg", f"BASE_IMAGE={base}",
                  "--build-arg", f"VERSION={version}",
                  "--build-arg", f"VCS_REF={revision}",
                  "--tag", ref, str(run_dir)],
                 stdout=sys.stderr)
    if result.returncode != 0:
        raise BuildError(f"docker build of {ref} failed (see its output above)")
    return ref


def image_size_mb(ref: str) -> float:
    result = run(["docker", "image", "inspect", "--format", "{{.Size}}", ref],
                 capture_output=True)
    return int(result.stdout.strip() or 0) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("services", nargs="*", help="only these services (default: all)")
    parser.add_argument("--json", type=Path, help="write the built references here")
    parser.add_argument("--print-tag", action="store_true",
                        help="print the tag the images get and exit: <version>-<git short sha>,"
                             " plus -dirty-<digest> for uncommitted changes")
    args = parser.parse_args(argv)
    if args.print_tag:
        print(image_tag())
        return 0

    if shutil.which("docker") is None:
        say("needs docker: apt-get install docker.io")
        return 1
    specs = image_specs()
    unknown = set(args.services) - {spec.service for spec in specs}
    if unknown:
        say(f"no Dockerfile for {sorted(unknown)}")
        return 2
    if args.services:
        specs = [spec for spec in specs if spec.service in args.services]

    try:
        base = choose_base()
        CONTEXT_PARENT.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CONTEXT_PARENT) as run_dir:
            context = Path(run_dir) / "build" / "docker"
            context.mkdir(parents=True)
            # Scripts an image copies in (entrypoints) live beside its Dockerfile.
            shutil.copytree(IMAGES, Path(run_dir) / "images",
                            ignore=shutil.ignore_patterns("__pycache__", "*.py", "base"))
            write_requirements(context, requirement_sets(specs))
            write_ca_bundle(context)
            build_wheel(context)
            version, revision, tag = project_metadata()["version"], git_short_sha(), image_tag()
            built = {spec.service: build_image(spec, base, tag, version, revision, Path(run_dir))
                     for spec in specs}
    except BuildError as error:
        say(str(error))
        return 1

    say(f"built {len(built)} images on {base}:")
    for ref in built.values():
        say(f"  {ref:55} {image_size_mb(ref):7.1f} MB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"base": base, "tag": tag, "images": built}, indent=2))
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
