from decimal import Decimal

from django.db import migrations

# Example on-demand prices to start from; engineers edit them to the contract price in the admin.
PROFILES = [
    ("CPU, 2 vCPU", "cpu", Decimal("0.0960"), 65),
    ("CPU, 8 vCPU", "cpu", Decimal("0.3400"), 120),
    ("NVIDIA T4", "cuda", Decimal("0.5260"), 70),
    ("NVIDIA A10G", "cuda", Decimal("1.0060"), 150),
    ("NVIDIA H100", "cuda", Decimal("4.0000"), 700),
]


def seed(apps, schema_editor):
    HardwareProfile = apps.get_model("planner", "HardwareProfile")
    for name, kind, price, watts in PROFILES:
        HardwareProfile.objects.get_or_create(
            name=name,
            defaults={
                "device_kind": kind,
                "price_per_hour": price,
                "currency": "USD",
                "power_watts": watts,
                "notes": "example on-demand price; edit to yours",
            },
        )


def unseed(apps, schema_editor):
    HardwareProfile = apps.get_model("planner", "HardwareProfile")
    HardwareProfile.objects.filter(name__in=[p[0] for p in PROFILES], poc_requests__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("planner", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
