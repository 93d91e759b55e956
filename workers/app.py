"""The Celery application. Configuration comes from Django settings (the CELERY_* names)."""

import os
from pathlib import Path

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "planner.settings")

app = Celery("roi_planner")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_routes = {
    "workers.tasks.run_poc": {"queue": "cpu"},  # services pick cpu or gpu per request
    "workers.schedule.*": {"queue": "schedule"},  # what celery beat sends: never behind a PoC
}
app.conf.task_default_queue = "cpu"
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)
app.autodiscover_tasks(["workers"], related_name="schedule", force=True)

for key, folder in (app.conf.broker_transport_options or {}).items():
    # The filesystem transport of the demo needs its folders to exist before the first message.
    if key.endswith("_folder") or key.startswith("data_folder"):
        Path(folder).mkdir(parents=True, exist_ok=True)


@worker_process_init.connect
def _import_heavy_libraries(**_kwargs: object) -> None:
    """Import torch and transformers as the worker starts rather than in its first job: a broken install
    shows at once, and no job (nor a worker replacing a dead one) waits ~10 s for the imports."""
    import torch  # noqa: F401
    import transformers.modeling_utils  # noqa: F401

    import workers.measure  # noqa: F401
