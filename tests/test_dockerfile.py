"""The Dockerfile, read as text (no Docker engine in CI): the settings it sets exist, the run comment
says how to make the first API token in the data volume, and what the server writes is writable by
its user."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from ocs.config import environment_names, load_settings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def image_environment() -> dict[str, str]:
    pairs = re.findall(r"^ENV (.+)$", DOCKERFILE, flags=re.MULTILINE)
    return dict(item.split("=", 1) for line in pairs for item in line.split())


def test_the_image_sets_only_real_settings_and_says_how_to_make_the_first_token() -> None:
    environment = {name: value for name, value in image_environment().items() if name.startswith("OCS_")}
    assert set(environment) <= set(environment_names())
    settings = load_settings(ROOT / "config" / "ocs.toml", environment)
    assert settings.http.host == "0.0.0.0"  # served beyond the container: every route but /health needs a token
    assert "-v ocs-data:/var/lib/ocs/data open-ocs token create --role admin" in DOCKERFILE


def test_the_data_directory_exists_in_the_image_and_belongs_to_the_server_user() -> None:
    workdir = PurePosixPath(re.findall(r"^WORKDIR (.+)$", DOCKERFILE, flags=re.MULTILINE)[-1])
    settings = load_settings(ROOT / "config" / "ocs.toml", {})
    written = {workdir / settings.redis.data_directory, workdir / settings.spool.path}
    data = PurePosixPath("/var/lib/ocs/data")
    assert all(data in path.parents for path in written), written
    assert f"mkdir -p /var/lib/ocs/config {data}" in DOCKERFILE and "chown -R ocs:ocs /var/lib/ocs" in DOCKERFILE
    assert f'VOLUME ["{data}"]' in DOCKERFILE and "USER ocs" in DOCKERFILE
    assert "-p 3868:3868" in DOCKERFILE and "8080" in DOCKERFILE.split("FROM")[0]  # the run comment
