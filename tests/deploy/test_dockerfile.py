"""deploy/Dockerfile, linted without a Docker engine: pinned slim base, non-root numeric USER, the
package installed with pip, writable paths for RocksDB and numba, the web port, `streamad worker`.
(scripts/check_deploy also runs hadolint on it.)"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from streamad.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _args() -> dict[str, str]:
    return dict(rest.split("=", 1) for op, rest in _instructions() if op == "ARG" and "=" in rest)


def _final_stage() -> list[tuple[str, str]]:
    ins = _instructions()
    last_from = max(i for i, (op, _) in enumerate(ins) if op == "FROM")
    return ins[last_from:]


def _env(stage) -> dict[str, str]:
    env = {}
    for op, rest in stage:
        if op == "ENV":
            for item in shlex.split(rest):
                k, _, v = item.partition("=")
                env[k] = v
    return env


def test_base_image_is_a_pinned_slim_python_311():
    args = _args()
    for op, rest in _instructions():
        if op != "FROM":
            continue
        image = rest.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        name, _, tag = image.partition(":")
        assert name == "python", image
        assert tag and "latest" not in tag, f"unpinned base {image}"
        assert re.match(r"3\.11\.\d+-slim", tag), f"not a patch-pinned slim 3.11: {image}"


def test_runs_as_a_non_root_numeric_user():
    users = [rest for op, rest in _final_stage() if op == "USER"]
    assert users, "no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]  # numeric: runAsNonRoot can verify it


def test_installs_the_package_and_runs_the_worker():
    ins = _instructions()
    assert any(op == "RUN" and re.search(r"pip install .*\s\.(\s|$)", rest) for op, rest in ins)
    final = _final_stage()
    entry = [json.loads(rest) for op, rest in final if op == "ENTRYPOINT"]
    cmd = [json.loads(rest) for op, rest in final if op == "CMD"]
    assert entry[-1] + cmd[-1][:1] == ["streamad", "worker"]
    assert ("EXPOSE", "6066") in final
    assert not any("latest" in rest for op, rest in ins if op == "FROM")


def test_writable_paths_are_volumes_owned_by_the_user():
    final = _final_stage()
    env = _env(final)
    data, numba = env["STREAMAD_DATA_DIR"], env["NUMBA_CACHE_DIR"]
    volumes = [json.loads(rest) for op, rest in final if op == "VOLUME"][-1]
    assert any(data == v or data.startswith(v + "/") for v in volumes)
    assert any(numba == v or numba.startswith(v + "/") for v in volumes)
    chowns = " ".join(rest for op, rest in final if op == "RUN" and "chown" in rest)
    uid = [rest for op, rest in final if op == "USER"][-1].split(":")[0]
    assert f"chown -R {uid}:" in chowns and data in chowns
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # nothing written next to the code (read-only root)
    for name in env:
        if name.startswith("STREAMAD_"):
            assert name[len("STREAMAD_"):].lower() in Settings.__dataclass_fields__, name


def test_build_context_is_trimmed():
    lines = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    assert lines[lines.index("*"):][:4] == ["*", "!pyproject.toml", "!README.md", "!streamad/"]
