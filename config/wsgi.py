import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

django_application = get_wsgi_application()

# After Django is set up: the lane imports models.
from partners.oauth.lane import TokenLane  # noqa: E402

# Ordinary token grants answered before Django's request handling (partners/oauth/lane.py).
application = TokenLane(django_application)
