from django.db import migrations, models


def single_factor_keeps_its_meaning(apps, schema_editor):
    """A calibration fitted before this field scaled the whole time, overhead included: its one factor
    becomes both."""
    HardwareCalibration = apps.get_model("planner", "HardwareCalibration")
    HardwareCalibration.objects.update(overhead=models.F("efficiency"))


class Migration(migrations.Migration):
    dependencies = [
        ("planner", "0011_preflight_search"),
    ]

    operations = [
        migrations.AddField(
            model_name="hardwarecalibration",
            name="overhead",
            field=models.FloatField(default=1.0),
        ),
        migrations.RunPython(single_factor_keeps_its_meaning, migrations.RunPython.noop),
    ]
