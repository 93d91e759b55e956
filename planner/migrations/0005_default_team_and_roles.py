import django.db.models.deletion
from django.db import migrations, models

DEFAULT_TEAM = "Default team"
# Roles are groups; what each may do is its permissions (object visibility is by team, in selectors).
ROLES = {
    "requester": ["add_pocrequest", "view_pocrequest"],
    "manager": ["view_pocrequest", "decide_pocrequest", "view_portfolio"],
    "engineer": [
        "view_pocrequest",
        "add_hardwareprofile",
        "change_hardwareprofile",
        "delete_hardwareprofile",
        "view_hardwareprofile",
    ],
}


def forwards(apps, schema_editor):
    from django.contrib.auth.management import create_permissions
    from django.contrib.contenttypes.management import create_contenttypes

    # Permissions are normally created after all migrations ran; the roles need them now.
    app_config = apps.get_app_config("planner")
    app_config.models_module = True
    create_contenttypes(app_config, verbosity=0, apps=apps)
    create_permissions(app_config, verbosity=0, apps=apps)
    app_config.models_module = None
    Team = apps.get_model("planner", "Team")
    PocRequest = apps.get_model("planner", "PocRequest")
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    if PocRequest.objects.filter(team__isnull=True).exists():
        team, _ = Team.objects.get_or_create(name=DEFAULT_TEAM)
        PocRequest.objects.filter(team__isnull=True).update(team=team)
        owners = PocRequest.objects.values_list("owner_id", flat=True).distinct()
        team.members.add(*owners)
    for role, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.add(*Permission.objects.filter(content_type__app_label="planner", codename__in=codenames))


class Migration(migrations.Migration):
    dependencies = [
        ("planner", "0004_teams_roles_reliability"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [
        migrations.RunPython(forwards, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="pocrequest",
            name="team",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="poc_requests",
                to="planner.team",
                verbose_name="team",
            ),
        ),
    ]
