"""The Celery application. Configuration comes from Django settings (the CELERY_* names)."""

import os
from pathlib import Path

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "planner.settings")

app = Celery("roi_planner")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_routes = {"workers.tasks.run_poc": {"queue": "cpu"}}  # services pick cpu or gpu per request
app.conf.task_default_queue = "cpu"
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)

for folder in {
    v for k, v in (app.conf.broker_transport_options or {}).items() if k.startswith("data_folder")
}:
    # The filesystem transport of the demo needs its folders to exist before the first message.
    Path(folder).mkdir(parents=True, exist_ok=True)
