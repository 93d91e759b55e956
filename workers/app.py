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

for key, folder in (app.conf.broker_transport_options or {}).items():
    # The filesystem transport of the demo needs its folders to exist before the first message.
    if key.endswith("_folder") or key.startswith("data_folder"):
        Path(folder).mkdir(parents=True, exist_ok=True)
