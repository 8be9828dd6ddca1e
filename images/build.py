#!/usr/bin/env python3
"""Build every service image of the suite: the one build path used by `make images` and by
the container tests (tests/container/conftest.py).

1. Reuse: an image whose reference (podpatterns/<service>:<version>-<git short sha>, plus
   -dirty-<digest> for uncommitted changes: a tag names one content) exists is not built
   again, unless --rebuild (or $BASE_IMAGE names another base than it was built on).
2. Choose the base: $BASE_IMAGE if set; otherwise python:3.12-slim if it is present or can
   be pulled; otherwise say so and build the Debian-packaged base (images/base/build.sh).
3. Write a fresh build context with the paths the Dockerfiles COPY from: images/ (entrypoint
   scripts) and build/docker/ (the project wheel from `pip wheel --no-deps`, reproducible,
   the pinned requirements of each service's extras set, and the optional CA bundle for
   pip in the build stage: $PIP_CA_BUNDLE, else $PIP_CERT, else none).
4. `docker build` each missing image: a Python service (PYTHON_SERVICES below) from the one
   recipe images/python-service.Dockerfile with its build arguments, any other image (the
   ambassador's PostgreSQL) from its own images/<pattern>/<service>.Dockerfile. One
   progress line per image, the tools' full output in build/images.log (its tail is shown
   on a failure).
5. Tag every image also podpatterns/<service>:dev, the stable tag the kind overlays name,
   and remove the dangling images earlier builds left (every image and build stage built
   here carries the label podpatterns.build; a build stage is kept, tagged
   <service>:cache-<stage>, so that a code change does not reinstall the dependencies).

    python images/build.py                   # all images
    python images/build.py log-collector     # just these
    python images/build.py --rebuild         # even those that exist
    python images/build.py --json build/images.json
    python images/build.py --print-tag       # just the tag, build nothing
    python images/build.py --list            # the service names, one a line

The last line of stdout is the image tag; --json writes {"base", "tag", "images"}.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
# Each run writes its own context, <run dir>/build/docker/ (the paths the Dockerfiles
# COPY from), so concurrent builds (a demo and the tests) never see each other's files.
CONTEXT_PARENT = ROOT / "build" / "contexts"
PUBLIC_BASE = "python:3.12-slim"
PULL_TIMEOUT_S = 120
# What goes into an image: a change here, committed or not, changes the tag.
IMAGE_INPUTS = ("patterns", "images", "pyproject.toml")
# Named stages before the last one (`FROM ... AS build`): built and tagged on their own.
STAGE_RE = re.compile(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", re.MULTILINE | re.IGNORECASE)
# The tag the kind overlays name: the images last built (or reused) here.
STABLE_TAG = "dev"
# On every image and build stage built here: `docker image prune --filter label=...`
# removes the dangling ones, and only those.
BUILD_LABEL = "podpatterns.build"
LOG = ROOT / "build" / "images.log"
# A reproducible wheel (its zip entries' times): the same code, the same layer, so a
# rebuild of unchanged code is all cache hits and leaves no dangling image.
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip entry can carry


# The one recipe of the Python services; the arguments below make each service's image.
PYTHON_RECIPE = IMAGES / "python-service.Dockerfile"


@dataclass(frozen=True)
class PythonService:
    """What differs between two Python service images: the rest is the recipe's."""

    pattern: str
    extras: str  # the requirements set: "core", or extras joined by "-" ("web-db")
    ports: str  # EXPOSE, separated by spaces
    description: str  # the OCI description label
    apt_packages: str = ""  # Debian packages the runtime stage adds, separated by spaces


# Service (its console script, also the image name) -> its image. A console script in
# pyproject.toml without an entry here has no image (tests/unit/test_dockerfiles.py).
PYTHON_SERVICES = {
    "legacy-app": PythonService(
        "adapter", "web", "8080",
        "adapter pattern, demo legacy application with a non-standard log format"),
    "log-adapter": PythonService(
        "adapter", "json", "9103",
        "adapter pattern, turns a legacy application's log into Prometheus metrics"),
    "db-ambassador": PythonService(
        "ambassador", "uvloop", "5432 9104",
        "ambassador pattern, local PostgreSQL proxy with health-checked failover"),
    "notes-app": PythonService(
        "ambassador", "web-db", "8080",
        "ambassador pattern, demo notes application that reaches PostgreSQL through the "
        "ambassador", apt_packages="postgresql-client"),
    "log-collector": PythonService(
        "sidecar", "json", "24224 8081",
        "sidecar pattern, Fluentd Forward log collector with an HTTP view of what it "
        "received"),
    "log-shipper": PythonService(
        "sidecar", "core", "9102",
        "sidecar pattern, log shipper that follows files on a shared volume and forwards "
        "each line"),
    "web-app": PythonService(
        "sidecar", "web", "8080",
        "sidecar pattern, demo web application writing its access log to a shared volume"),
    "whoami-app": PythonService(
        "security", "web", "8080",
        "security pattern, demo application that knows nothing about TLS and answers who "
        "called it"),
    "cert-issuer": PythonService(
        "security", "tls", "8444 9106",
        "security pattern, the organisation's CA stand-in signing short-lived certificates "
        "for callers with a bootstrap token"),
    "cert-renewer": PythonService(
        "security", "tls", "9107",
        "security pattern, sidecar that keeps a short-lived key and certificate renewed on a "
        "shared memory volume"),
    "tls-proxy": PythonService(
        "security", "uvloop-httptools", "8443 9108",
        "security pattern, sidecar terminating TLS in front of an app that speaks plain "
        "HTTP, reloading renewed certificates"),
}


@dataclass(frozen=True)
class ImageSpec:
    service: str  # the image name; for a Python service also its console script
    pattern: str
    dockerfile: Path
    # The service's own --build-arg NAME=value pairs (besides BASE_IMAGE, VERSION, VCS_REF).
    build_args: tuple[tuple[str, str], ...] = ()
    requirements: str | None = None  # the requirements set it installs; None: not Python


class BuildError(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, check=False, **kwargs)


class BuildLog:
    """Where the build tools' output goes instead of the terminal: `path`, written as
    <path>.<pid> and moved into place when the run ends, so concurrent runs (a demo and
    the tests) never mix their output."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = path.with_name(f"{path.name}.{os.getpid()}")
        self.file: TextIO = open(self._partial, "w")  # noqa: SIM115 (closed by close())

    def run(self, cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.file.write("\n$ " + " ".join(cmd) + "\n")
        self.file.flush()
        return run(cmd, stdout=kwargs.pop("stdout", self.file), stderr=self.file, **kwargs)

    def tail(self, lines: int = 25) -> str:
        self.file.flush()
        text = self._partial.read_text(errors="replace").rstrip().splitlines()
        return "\n".join("  | " + line for line in text[-lines:])

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()
            self._partial.replace(self.path)

    def relative(self) -> str:
        path = self.path.resolve()
        return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def python_spec(service: str, image: PythonService) -> ImageSpec:
    args = (("SERVICE", service), ("EXTRAS", image.extras), ("PORTS", image.ports),
            ("DESCRIPTION", image.description), ("APT_PACKAGES", image.apt_packages))
    return ImageSpec(service=service, pattern=image.pattern, dockerfile=PYTHON_RECIPE,
                     build_args=args, requirements=image.extras)


def image_specs() -> list[ImageSpec]:
    """Every image, in the order of images/<pattern>/<service>: the Python services from
    the recipe, any other image from its own images/<pattern>/<service>.Dockerfile."""
    specs = [python_spec(service, image) for service, image in PYTHON_SERVICES.items()]
    specs += [ImageSpec(service=path.name.removesuffix(".Dockerfile"), pattern=path.parent.name,
                        dockerfile=path)
              for path in IMAGES.glob("*/*.Dockerfile")]
    return sorted(specs, key=lambda spec: (spec.pattern, spec.service))


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


def image_labels(ref: str) -> dict[str, str] | None:
    """The image's labels; None when there is no such image."""
    result = run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", ref],
                 capture_output=True)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout or "null") or {}


def choose_base(log: BuildLog) -> str:
    explicit = os.environ.get("BASE_IMAGE")
    if explicit:
        say(f"base image {explicit} (from $BASE_IMAGE)")
        return explicit
    if image_exists(PUBLIC_BASE):
        say(f"base image {PUBLIC_BASE} (present)")
        return PUBLIC_BASE
    try:
        pulled = log.run(["docker", "pull", PUBLIC_BASE], timeout=PULL_TIMEOUT_S)
        if pulled.returncode == 0:
            say(f"base image {PUBLIC_BASE} (pulled)")
            return PUBLIC_BASE
        reason = log.tail(1).removeprefix("  | ").strip() or "unknown error"
    except subprocess.TimeoutExpired:
        reason = f"pull timed out after {PULL_TIMEOUT_S}s"
    say(f"{PUBLIC_BASE} is not available ({reason})")
    say("building the Debian-packaged base image instead (images/base/build.sh; a few "
        "minutes the first time)")
    built = log.run([str(IMAGES / "base" / "build.sh")], stdout=subprocess.PIPE)
    if built.returncode != 0 or not built.stdout.strip():
        raise BuildError("images/base/build.sh failed")
    return built.stdout.strip().splitlines()[-1]


def requirement_sets(specs: list[ImageSpec]) -> set[str]:
    """The requirement files the images install: `core`, or extras joined by `-`. None for
    an image without the project in it (the ambassador's PostgreSQL)."""
    return {spec.requirements for spec in specs if spec.requirements is not None}


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


def wheel_source(target: Path) -> Path:
    """A copy of what the wheel is built from, and of nothing else: the tag's inputs
    (patterns/, pyproject.toml) as they are, and the README pyproject.toml names as
    committed (an uncommitted edit does not change the tag, so it must not change the
    image). A build in the repository itself would share setuptools' build/ and
    *.egg-info with every concurrent build and carry their leftovers into the wheel."""
    shutil.copytree(ROOT / "patterns", target / "patterns",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    shutil.copyfile(ROOT / "pyproject.toml", target / "pyproject.toml")
    readme = str(project_metadata().get("readme", "README.md"))
    committed = run(["git", "-C", str(ROOT), "show", f"HEAD:{readme}"], capture_output=True)
    if committed.returncode == 0:
        (target / readme).write_text(committed.stdout)
    else:
        shutil.copyfile(ROOT / readme, target / readme)
    return target


def build_wheel(context: Path, log: BuildLog) -> None:
    wheels = context / "wheels"
    wheels.mkdir(parents=True)
    say("building the project wheel")
    source = wheel_source(context.parent.parent / "wheel-source")
    result = log.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                      "--wheel-dir", str(wheels), str(source)],
                     env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH})
    if result.returncode != 0:
        raise BuildError("pip wheel failed")


def prefix() -> str:
    return os.environ.get("IMAGE_PREFIX", "podpatterns")


def build_image(spec: ImageSpec, base: str, tag: str, version: str, revision: str,
                run_dir: Path, log: BuildLog) -> str:
    """docker build, its output in the log: first each named stage before the last, tagged
    <service>:cache-<stage> (a build stage left untagged would dangle, and removing it
    would take the dependency layers, the slow part, with it), then the image."""
    ref = f"{prefix()}/{spec.service}:{tag}"
    common = ["docker", "build", "--file", str(spec.dockerfile),
              "--build-arg", f"BASE_IMAGE={base}",
              "--build-arg", f"VERSION={version}",
              "--build-arg", f"VCS_REF={revision}",
              "--label", f"{BUILD_LABEL}=images/build.py"]
    for name, value in spec.build_args:
        common += ["--build-arg", f"{name}={value}"]
    stages = STAGE_RE.findall(spec.dockerfile.read_text())
    targets = [(["--target", stage], f"{prefix()}/{spec.service}:cache-{stage}")
               for stage in stages] + [([], ref)]
    for target, name in targets:
        result = log.run([*common, *target, "--tag", name, str(run_dir)], env=build_env())
        if result.returncode != 0:
            raise BuildError(f"docker build of {name} failed")
    return ref


def build_env() -> dict[str, str]:
    """`docker build`'s environment. Where it is BuildKit (Docker >= 23 with buildx), it
    attaches a provenance attestation to each image by default; with Docker's containerd
    image store, `docker save` then names an attestation manifest it does not include, and
    `kind load docker-image` fails ("ctr: content digest ...: not found", kind#3795). The
    legacy builder makes none and ignores the variable; a value set by the user wins."""
    return {"BUILDX_NO_DEFAULT_ATTESTATIONS": "1", **os.environ}


def image_size_mb(ref: str) -> float:
    result = run(["docker", "image", "inspect", "--format", "{{.Size}}", ref],
                 capture_output=True)
    return int(result.stdout.strip() or 0) / 1e6


def docker_problem() -> str | None:
    if shutil.which("docker") is None:
        return "needs docker: apt-get install docker.io"
    info = run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True)
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["no answer"])[-1]
        return f"needs a running Docker engine (`docker info`: {reason})"
    return None


def reusable(ref: str, rebuild: bool) -> bool:
    """The image exists and may stand for this build: not --rebuild, and built on the base
    $BASE_IMAGE names when that is set."""
    if rebuild:
        return False
    labels = image_labels(ref)
    if labels is None:
        return False
    explicit = os.environ.get("BASE_IMAGE")
    return not explicit or labels.get("org.opencontainers.image.base.name") == explicit


def prune_dangling() -> None:
    """The dangling images of earlier builds (a tag moved to a new build of its image or
    stage): only those carrying our label."""
    pruned = run(["docker", "image", "prune", "--force", "--filter", f"label={BUILD_LABEL}"],
                 capture_output=True)
    deleted = pruned.stdout.count("deleted: ")
    if deleted:
        reclaimed = (pruned.stdout.strip().splitlines() or [""])[-1]
        say(f"removed {deleted} dangling layers of earlier builds ({reclaimed})")


def build(args: argparse.Namespace, log: BuildLog) -> int:
    problem = docker_problem()
    if problem:
        raise BuildError(problem)
    specs = image_specs()
    unknown = set(args.services) - {spec.service for spec in specs}
    if unknown:
        say(f"no image named {sorted(unknown)} (--list names them)")
        return 2
    if args.services:
        specs = [spec for spec in specs if spec.service in args.services]

    version, revision, tag = project_metadata()["version"], git_short_sha(), image_tag()
    refs = {spec.service: f"{prefix()}/{spec.service}:{tag}" for spec in specs}
    missing = [spec for spec in specs if not reusable(refs[spec.service], args.rebuild)]
    base = ""
    run_dir: Path | None = None
    with contextlib.ExitStack() as stack:
        if missing:
            base = choose_base(log)
            CONTEXT_PARENT.mkdir(parents=True, exist_ok=True)
            run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=CONTEXT_PARENT)))
            context = run_dir / "build" / "docker"
            context.mkdir(parents=True)
            # Scripts an image copies in (entrypoints) live beside its Dockerfile.
            shutil.copytree(IMAGES, run_dir / "images",
                            ignore=shutil.ignore_patterns("__pycache__", "*.py", "base"))
            write_requirements(context, requirement_sets(missing))
            write_ca_bundle(context)
            build_wheel(context, log)
        for number, spec in enumerate(specs, 1):
            ref = refs[spec.service]
            # One line per image: started now, finished when the image is there.
            print(f"images: [{number}/{len(specs)}] {ref}  ", end="", file=sys.stderr,
                  flush=True)
            started = time.monotonic()
            try:
                if spec in missing:
                    assert run_dir is not None
                    print("building ...", end="", file=sys.stderr, flush=True)
                    build_image(spec, base, tag, version, revision, run_dir, log)
                    outcome = f" built in {time.monotonic() - started:.0f}s"
                else:
                    outcome = "reused (it exists; --rebuild builds it again)"
                stable = f"{prefix()}/{spec.service}:{STABLE_TAG}"
                if log.run(["docker", "tag", ref, stable]).returncode != 0:
                    raise BuildError(f"docker tag {ref} {stable} failed")
            except BaseException:
                print(" failed", file=sys.stderr, flush=True)
                raise
            print(f"{outcome}, {image_size_mb(ref):.1f} MB", file=sys.stderr, flush=True)
    if missing:
        prune_dangling()
    if not base:
        labels = image_labels(next(iter(refs.values()))) or {}
        base = labels.get("org.opencontainers.image.base.name", "unknown")

    say(f"{len(refs)} images of tag {tag}, also tagged :{STABLE_TAG}, on {base}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"base": base, "tag": tag, "images": refs}, indent=2))
    print(tag)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, 1 on a failure: one line saying what to do (and the log's tail when
    a tool failed), never a traceback; 130 on Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("services", nargs="*", help="only these services (default: all)")
    parser.add_argument("--json", type=Path, help="write the built references here")
    parser.add_argument("--rebuild", action="store_true",
                        help="build the images even if this tag's exist")
    parser.add_argument("--log", type=Path, default=LOG,
                        help=f"the build tools' output (default: {LOG.relative_to(ROOT)})")
    parser.add_argument("--list", action="store_true",
                        help="print the service names, one a line, and exit")
    parser.add_argument("--print-tag", action="store_true",
                        help="print the tag the images get and exit: <version>-<git short sha>,"
                             " plus -dirty-<digest> for uncommitted changes")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(spec.service for spec in image_specs()))
        return 0
    if args.print_tag:
        print(image_tag())
        return 0

    log = BuildLog(args.log)
    try:
        return build(args, log)
    except BuildError as error:
        if log.file.tell():
            print(log.tail(), file=sys.stderr)
        say(f"{error}; the full output is in {log.relative()}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Exception as error:
        log.file.write("\n" + traceback.format_exc())
        say(f"unexpected error: {type(error).__name__}: {error} (the details are in "
            f"{log.relative()}; please report it)")
        return 1
    finally:
        log.close()


if __name__ == "__main__":
    sys.exit(main())
