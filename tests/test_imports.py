import subprocess
import sys


def test_web_process_never_imports_torch():
    code = (
        "import django, os, sys;"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.settings';"
        "django.setup();"
        "import planner.urls, planner.views, planner.admin, planner.forms, planner.services, planner.selectors;"
        "from plugins import registry; registry.techniques();"
        "from django.test import Client;"
        "heavy = [m for m in ('torch', 'transformers', 'accelerate', 'torchao') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_web_process_never_loads_the_runner_the_measurement_or_the_bridge():
    """The web sends tasks by name through workers.app; it never loads what runs them, even though
    workers.app discovers workers.tasks."""
    code = (
        "import django, os, sys;"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.settings';"
        "django.setup();"
        "import planner.urls, planner.views, planner.forms, planner.services, planner.selectors, planner.admin;"
        "import workers.app, workers.tasks;"
        "from django.test import Client;"
        "loaded = [m for m in ('workers.runner', 'workers.measure', 'workers.execution', 'workers.reconcile')"
        " if m in sys.modules];"
        "print(loaded); sys.exit(1 if loaded or 'workers.tasks.run_poc' not in workers.app.app.tasks else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_measurement_record_is_pure():
    code = (
        "import sys, workers.record; sys.exit(1 if {'django', 'torch', 'celery'} & set(sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_roi_is_pure():
    code = "import sys, planner.roi; sys.exit(1 if {'django', 'torch', 'celery'} & set(sys.modules) else 0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
