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


def test_roi_is_pure():
    code = "import sys, planner.roi; sys.exit(1 if {'django', 'torch', 'celery'} & set(sys.modules) else 0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
