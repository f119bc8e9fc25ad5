"""The Django project: settings, URLs, WSGI, and the `make run` launcher. Apps live beside it.

Celery's app is loaded with the project (as Celery's Django guide does) so that every process, the web
included, sends tasks by name through Lynx's app and its broker, never Celery's default one.
"""

from workers.celery import app as celery_app

__all__ = ["celery_app"]
