#!/usr/bin/env python3
"""Checks Dockerfiles without a container engine (none runs on the build machines).

    check_dockerfiles.py ROOT DOCKERFILE...

For each Dockerfile (parsed with `dockerfile-parse`), against the build context ROOT:
- every FROM names a pinned tag (not `latest`, not untagged) or an earlier stage, or an ARG
  whose default is pinned;
- the final stage runs as a named non-root USER;
- the final stage has a HEALTHCHECK, or builds FROM an image of ours (which has one);
- every COPY/ADD source from the context exists and is not excluded by ROOT/.dockerignore;
- `velo-sql` and `velo-sql-multi` are copied onto PATH (/usr/local/bin) when the file builds them.
Prints one line per problem, "file: problem", and exits 1 when there is any.
"""
import fnmatch
import os
import sys

from dockerfile_parse import DockerfileParser


def ignored_patterns(root):
    path = os.path.join(root, ".dockerignore")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l.strip() for l in f if l.strip() and not l.startswith("#")]


def is_ignored(source, patterns):
    parts = source.strip("./").split("/")
    for pattern in patterns:
        for i in range(1, len(parts) + 1):
            if fnmatch.fnmatch("/".join(parts[:i]), pattern):
                return True
    return False


def pinned(image):
    if "@sha256:" in image:
        return True
    name = image.rsplit("/", 1)[-1]
    if ":" not in name:
        return False
    return name.split(":", 1)[1] not in ("", "latest")


def check(root, path):
    problems = []
    with open(path, "rb") as f:
        parser = DockerfileParser(fileobj=f, env_replace=False)
        structure = parser.structure
    args = {}
    stages = []
    final_user = None
    final_healthcheck = False
    ours = False
    binaries = set()
    patterns = ignored_patterns(root)
    for item in structure:
        instruction, value = item["instruction"], item["value"].strip()
        if instruction == "ARG" and "=" in value:
            key, default = value.split("=", 1)
            args[key.strip()] = default.strip()
        elif instruction == "FROM":
            words = value.split()
            image = words[0]
            if image.startswith("${") and image.endswith("}"):
                image = args.get(image[2:-1], "")
                ours = image.startswith("velostream")
            else:
                ours = False
            if image not in stages and not pinned(image):
                problems.append(f"FROM {words[0]}: the base image is not pinned to a tag")
            if len(words) >= 3 and words[1].upper() == "AS":
                stages.append(words[2])
            final_user = None
            final_healthcheck = False
        elif instruction == "USER":
            final_user = value.split(":")[0]
        elif instruction == "HEALTHCHECK":
            final_healthcheck = not value.upper().startswith("NONE")
        elif instruction in ("COPY", "ADD"):
            words = [w for w in value.split() if not w.startswith("--")]
            from_stage = any(w.startswith("--from=") for w in value.split())
            sources, destination = words[:-1], words[-1]
            if not from_stage:
                for source in sources:
                    if not os.path.exists(os.path.join(root, source)):
                        problems.append(f"{instruction} {source}: not in the build context")
                    elif is_ignored(source, patterns):
                        problems.append(f"{instruction} {source}: excluded by .dockerignore")
            if destination.rstrip("/") == "/usr/local/bin":
                binaries.update(os.path.basename(s) for s in sources)
    if final_user in (None, "root", "0") and not ours:
        problems.append("the final stage runs as root (no USER, or USER root)")
    if not final_healthcheck and not ours:
        problems.append("the final stage has no HEALTHCHECK")
    if not ours:
        for binary in ("velo-sql", "velo-sql-multi"):
            if binary not in binaries:
                problems.append(f"{binary} is not copied to /usr/local/bin")
    return problems


def main():
    root, files = sys.argv[1], sys.argv[2:]
    failed = False
    for path in files:
        for problem in check(root, path):
            print(f"{os.path.basename(path)}: {problem}")
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
