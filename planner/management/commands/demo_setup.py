"""Builds what the demo needs: the fine-tuned demo teacher, a demo login, and one sample request."""

import sys
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from planner import services
from planner.models import HardwareProfile, PocRequest, Team


class Command(BaseCommand):
    help = "Fine-tune the demo teacher once (cached under var/), create the demo user and a sample request."

    def add_arguments(self, parser):
        parser.add_argument("--no-sample", action="store_true", help="Do not file the sample request.")

    def handle(self, *args, no_sample: bool = False, **options):
        from workers.demo import build_demo_teacher

        def report(fraction: float, message: str) -> None:
            sys.stdout.write(f"\r[demo teacher {fraction:4.0%}] {message:<70}")
            sys.stdout.flush()

        self.stdout.write(f"Demo teacher: {settings.DEMO_MODEL_DIR}")
        record = build_demo_teacher(settings.DEMO_MODEL_DIR, report=report)
        self.stdout.write("")
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo teacher ready: held-out accuracy {record['accuracy']:.4f}, macro-F1 {record['macro_f1']:.4f} "
                f"on {record['eval_examples']} paragraphs (fine-tuned in {record['seconds']} s)"
            )
        )
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            username="demo", defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password("demo")
            user.save()
            self.stdout.write("Created the login demo / demo (for the local demo only).")
        # Staff sees everything anyway; the team and roles make the demo user's pages those of a manager.
        team, _created = Team.objects.get_or_create(name="Demo team")
        team.members.add(user)
        user.groups.add(*Group.objects.filter(name__in=["manager", "requester"]))
        if no_sample or PocRequest.objects.exists():
            return
        hardware = HardwareProfile.objects.filter(device_kind="cpu").order_by("price_per_hour").first()
        poc_request = services.poc_request_create(
            owner=user,
            team=team,
            title="Sample: topic classifier, int8 and trimmed vocabulary on CPU",
            model_ref="demo",
            dataset_ref="demo",
            p95_target_ms=Decimal("40"),
            accuracy_floor_pct=Decimal("97"),
            requests_per_day=2_000_000,
            hardware=hardware,
            pipelines=[
                [{"technique": "quantize.dynamic-int8"}],
                [{"technique": "prune.vocabulary"}, {"technique": "quantize.dynamic-int8"}],
            ],
        )
        self.stdout.write(f"Filed the sample request #{poc_request.pk}; a worker measures it once started.")
