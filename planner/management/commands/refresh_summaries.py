"""Rebuild the portfolio summaries from the measured candidates.

python manage.py refresh_summaries              # every request (after a price change or a new ROI rule)
python manage.py refresh_summaries --request 12 --request 14
"""

from django.core.management.base import BaseCommand

from planner import services


class Command(BaseCommand):
    help = "Recompute every finished request's recommendation and money for the portfolio."

    def add_arguments(self, parser):
        parser.add_argument("--request", type=int, action="append", dest="requests", help="Only this id.")

    def handle(self, *args, **opts):
        written = services.poc_request_summaries_refresh(request_ids=opts["requests"])
        self.stdout.write(f"{written} summaries written.")
