"""Builds what the demo needs: the fine-tuned demo teacher, the demo LLM, a demo login, and two sample
requests (a topic classifier, and text generation on the demo LLM)."""

import sys
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from planner import services
from planner.models import HardwareProfile, PocRequest, Team
from plugins import registry
from plugins.base import ParamError

# The text-generation sample: cheap candidates that a CPU worker measures in a few minutes. Layer dropping
# keeps 24 of SmolLM2's 30 decoder layers, dropping those nearest the output (no search, no fine-tuning),
# which shows what cutting layers without distillation does to perplexity.
LLM_SAMPLE_PIPELINES = [
    [{"technique": "quantize.weight-only", "params": {"bits": 8}}],
    [{"technique": "quantize.half", "params": {"dtype": "bf16"}}],
    [
        {"technique": "prune.layers", "params": {"keep": 24, "strategy": "top"}},
        {"technique": "quantize.weight-only", "params": {"bits": 8}},
    ],
]


class Command(BaseCommand):
    help = (
        "Fine-tune the demo teacher and convert the demo LLM once (cached under var/), create the demo user "
        "and the sample requests."
    )

    def add_arguments(self, parser):
        parser.add_argument("--no-sample", action="store_true", help="Do not file the sample requests.")

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
        llm_ready = self._build_demo_llm()
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
        if no_sample:
            return
        hardware = HardwareProfile.objects.filter(device_kind="cpu").order_by("price_per_hour").first()
        if not PocRequest.objects.filter(task=PocRequest.Task.SEQUENCE_CLASSIFICATION).exists():
            self._file_classification_sample(user, team, hardware)
        if not PocRequest.objects.filter(task=PocRequest.Task.CAUSAL_LM).exists():
            if llm_ready:
                self._file_generation_sample(user, team, hardware)
            else:
                self.stdout.write("Skipped the text-generation sample request: the demo LLM is not built.")

    def _build_demo_llm(self) -> bool:
        """Convert the demo LLM once; False (with the reason printed) when it cannot be built here."""
        from workers.demo import build_demo_llm

        def report(fraction: float, message: str) -> None:
            sys.stdout.write(f"\r[demo LLM {fraction:4.0%}] {message:<70}")
            sys.stdout.flush()

        self.stdout.write(f"Demo LLM: {settings.DEMO_LLM_DIR}")
        try:
            record = build_demo_llm(settings.DEMO_LLM_DIR, report=report)
        except Exception as exc:  # a missing package or a failed conversion: the rest of the demo still works
            self.stdout.write("")
            self.stdout.write(
                self.style.WARNING(f"The demo LLM could not be built ({type(exc).__name__}: {exc}).")
            )
            return False
        self.stdout.write("")
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo LLM ready: {record.get('architecture', '?')}, {record.get('parameters', 0):,} parameters, "
                f"from {record.get('source', '?')}"
            )
        )
        return True

    def _file_classification_sample(self, user, team, hardware) -> None:
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

    def _file_generation_sample(self, user, team, hardware) -> None:
        pipelines = []
        for pipeline in LLM_SAMPLE_PIPELINES:
            try:
                registry.validate_pipeline(
                    pipeline, device=hardware.device_kind, task=PocRequest.Task.CAUSAL_LM
                )
            except ParamError as exc:
                label = registry.pipeline_label(pipeline)
                self.stdout.write(f"The text-generation sample leaves out {label}: {exc}")
                continue
            pipelines.append(pipeline)
        poc_request = services.poc_request_create(
            owner=user,
            team=team,
            title="Sample: SmolLM2 chat replies, int8, bf16 and fewer layers on CPU",
            task=PocRequest.Task.CAUSAL_LM,
            model_ref="demo",
            dataset_ref="demo",
            p95_target_ms=Decimal("500"),  # time to first token
            per_token_target_ms=Decimal("100"),
            output_tokens_per_request=128,
            perplexity_increase_pct=Decimal("10"),
            requests_per_day=1_000_000,
            hardware=hardware,
            pipelines=pipelines,
        )
        self.stdout.write(
            f"Filed the text-generation sample request #{poc_request.pk}; a worker measures it once started."
        )
