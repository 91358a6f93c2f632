#!/usr/bin/env python3
"""Checks a compose file without a container engine (none runs on the build machines).

    check_compose.py COMPOSE_FILE

The file must follow the Compose specification's JSON schema (`compose_spec.json` beside this
script, from the compose-spec project as shipped in docker-compose 1.29.2, Apache-2.0): what
`docker compose config` would refuse. Then, relative to the file's folder: every service has a
pinned image or a build whose context and
Dockerfile exist, and a healthcheck; every `depends_on` names a service, and a
`service_healthy` condition one with a healthcheck; every bind-mounted path exists; every named
volume is declared. Prints one line per problem and exits 1 when there is any.
"""
import os
import sys

import json

import jsonschema
import yaml

SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compose_spec.json")


def pinned(image):
    name = image.rsplit("/", 1)[-1]
    return ":" in name and name.split(":", 1)[1] not in ("", "latest")


def check(path):
    root = os.path.dirname(os.path.abspath(path))
    with open(path) as f:
        doc = yaml.safe_load(f)
    problems = []
    with open(SCHEMA) as f:
        validator = jsonschema.Draft201909Validator(json.load(f))
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in error.path) or "(top)"
        problems.append(f"{where}: schema: {error.message}")
    services = doc.get("services") or {}
    declared = set((doc.get("volumes") or {}).keys())
    if not services:
        problems.append("no services")
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not os.path.isdir(os.path.join(root, context)):
                problems.append(f"{name}: build context {context} does not exist")
            elif not os.path.exists(os.path.join(root, context, dockerfile)):
                problems.append(f"{name}: {dockerfile} does not exist")
        elif "image" not in service:
            problems.append(f"{name}: neither image nor build")
        elif not pinned(service["image"]):
            problems.append(f"{name}: image {service['image']} is not pinned to a tag")
        if "healthcheck" not in service:
            problems.append(f"{name}: no healthcheck")
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {} for d in depends}
        for other, how in depends.items():
            if other not in services:
                problems.append(f"{name}: depends on {other}, which is not a service")
            elif (how or {}).get("condition") == "service_healthy" and "healthcheck" not in services[other]:
                problems.append(f"{name}: waits for {other} to be healthy, which has no healthcheck")
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith(".") or source.startswith("/"):
                if not os.path.exists(os.path.join(root, source)):
                    problems.append(f"{name}: mounts {source}, which does not exist")
            elif source and source not in declared:
                problems.append(f"{name}: volume {source} is not declared")
    return problems


def main():
    problems = check(sys.argv[1])
    for problem in problems:
        print(problem)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
